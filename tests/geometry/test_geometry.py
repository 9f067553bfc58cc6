"""stnkit.geometry: one class per public function or class.

Each class has the same small set of checks where they apply: smoke (shapes, dtypes,
devices), exceptions (one-line messages naming the argument), gradcheck in float64,
trace/compile, and regressions for the identity and for the convention. The core
checks take the ``device`` fixture, so they also run on CUDA when it is present.

References never come from the code under test: torch's own affine_grid/grid_sample,
torch.rot90, scipy.ndimage.map_coordinates, scipy's thin-plate RBF, OpenCV and formulas
written out here from the documented convention (output -> input, normalised [-1, 1],
x before y).
"""

from __future__ import annotations

import itertools
import math
import re

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
    TRANSFORMS,
    Affine,
    Attention,
    MatrixFamily,
    Projective,
    Similarity,
    ThinPlateSpline,
    TransformFamily,
    Translation,
    base_grid,
    compose_grid,
    from_pixel_matrix,
    get_transform,
    normalization_matrix,
    sample,
    to_pixel_matrix,
    warp,
)

FAMILIES = ["translation", "attention", "similarity", "affine", "projective", "tps"]
MATRIX_FAMILIES = ["translation", "attention", "similarity", "affine", "projective"]
F64 = torch.float64
TRACE_WARNINGS = ("ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning", "ignore::FutureWarning")

# affine_grid warns about unit-size grids with align_corners=True; the sizes are deliberate
pytestmark = pytest.mark.filterwarnings("ignore:Since version 1.3.0, affine_grid:UserWarning")


def esc(s: str) -> str:
    return re.escape(s)


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


def documented_matrix(name: str, p: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) output -> input matrices written from the documented parameterisations."""
    one, zero = torch.ones_like(p[:, 0]), torch.zeros_like(p[:, 0])
    if name == "translation":
        rows = [one, zero, p[:, 0], zero, one, p[:, 1]]
    elif name == "attention":
        rows = [p[:, 0], zero, p[:, 1], zero, p[:, 0], p[:, 2]]
    elif name == "similarity":
        c, s = p[:, 0] * torch.cos(p[:, 1]), p[:, 0] * torch.sin(p[:, 1])
        rows = [c, -s, p[:, 2], s, c, p[:, 3]]
    elif name in ("affine", "projective"):
        rows = list(p[:, :6].unbind(1))
    else:
        raise AssertionError(name)
    last = [p[:, 6], p[:, 7], one] if name == "projective" else [zero, zero, one]
    return torch.stack(rows + last, dim=1).view(-1, 3, 3)


def apply_homogeneous(m: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    """Points (B, N, 2) through (B, 3, 3) matrices, dividing by the third coordinate."""
    hom = torch.cat([pts, torch.ones_like(pts[..., :1])], -1) @ m.transpose(1, 2)
    return hom[..., :2] / hom[..., 2:]


def rand(*shape: int, seed: int = 0, dtype=F64, device="cpu") -> torch.Tensor:
    """Uniform [0, 1) drawn on the CPU, so every device sees the same values."""
    return torch.rand(shape, dtype=dtype, generator=torch.Generator().manual_seed(seed)).to(device)


def rand_params(name: str, batch: int, strength: float = 1.0, seed: int = 0, dtype=F64, device="cpu") -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return get_transform(name).random(batch, strength, generator=gen, dtype=dtype).to(device)


def linear_image(h: int, w: int, align_corners: bool = False) -> torch.Tensor:
    """A (1, 2, H, W) image whose channels are affine functions of position.

    Bilinear interpolation reproduces affine functions exactly, so warping it
    once or several times gives the same values wherever nothing reads the padding.
    """
    g = ref_base_grid(h, w, align_corners).view(h, w, 2)
    a = 0.7 * g[..., 0] - 0.3 * g[..., 1] + 0.2
    b = -0.4 * g[..., 0] + 0.9 * g[..., 1] - 0.1
    return torch.stack([a, b])[None]


def check_gradients(fn, *inputs: torch.Tensor) -> None:
    """float64 gradcheck; CUDA's grid_sample backward adds atomically, so re-runs may differ by rounding."""
    on_cuda = any(t.is_cuda for t in inputs)
    assert gradcheck(fn, inputs, nondet_tol=1e-12 if on_cuda else 0.0)


def assert_on(t: torch.Tensor, shape: tuple, dtype: torch.dtype, device: torch.device) -> None:
    assert tuple(t.shape) == shape and t.dtype == dtype and t.device.type == device.type


def check_equals_affine_warp(name: str, p: list[float], align_corners: bool) -> None:
    """Family ``name`` equals the affine warp with its documented matrix, in every mode."""
    p = torch.tensor([p], dtype=F64)
    theta = documented_matrix(name, p)[:, :2]
    torch.testing.assert_close(get_transform(name).matrix(p)[:, :2], theta, atol=1e-15, rtol=0)
    x = rand(1, 3, 10, 12)
    for mode in MODES:
        out = warp(x, p, name, mode=mode, align_corners=align_corners)
        ref = warp(x, theta, "affine", mode=mode, align_corners=align_corners)
        torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)


def opencv_case(name, m_pix, in_size, out_size, seed):
    """Warp with OpenCV; also where OpenCV's source point is inside the image (from its matrix alone)."""
    (h, w), (ho, wo) = in_size, out_size
    img = np.random.default_rng(seed).random((h, w)).astype(np.float32)
    if name == "affine":
        ref = cv2.warpAffine(img, m_pix[:2], (wo, ho), flags=cv2.INTER_LINEAR, borderValue=0)
    else:
        ref = cv2.warpPerspective(img, m_pix, (wo, ho), flags=cv2.INTER_LINEAR, borderValue=0)
    jj, ii = np.meshgrid(np.arange(wo), np.arange(ho))
    src = np.linalg.inv(m_pix) @ np.stack([jj.ravel(), ii.ravel(), np.ones(jj.size)])
    with np.errstate(divide="ignore", invalid="ignore"):  # on the horizon: never inside
        col, row = (src[:2] / src[2]).reshape(2, ho, wo)
    inside = (col >= 0) & (col <= w - 1) & (row >= 0) & (row <= h - 1)
    assert inside.mean() > 0.4
    return img, ref, inside


def check_opencv(out, ref, inside):
    diff = np.abs(out - ref)[inside]
    # OpenCV rounds source coordinates to 1/32 px (INTER_BITS = 5): on [0, 1] noise that
    # is at most ~1/32; a half-pixel convention error would give errors near 0.5
    assert diff.max() < 0.04
    assert diff.mean() < 0.01


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


# ----------------------------------------------------------------------------------------
class TestBaseGrid:
    def test_smoke(self, device, dtype):
        assert_on(base_grid((3, 5), device=device, dtype=dtype), (3, 5, 2), dtype, device)
        assert_on(base_grid(4), (4, 4, 2), torch.get_default_dtype(), torch.device("cpu"))

    def test_exceptions(self):
        with pytest.raises(ValueError, match="out_size must be positive"):
            base_grid((3, 0))
        with pytest.raises(TypeError, match=esc("out_size must be an int or a pair (H, W) of ints, got 2.5")):
            base_grid(2.5)

    @pytest.mark.parametrize("align_corners", [False, True])
    def test_convention(self, align_corners, device):
        # the pixel centres written out from the convention, and F.affine_grid of the identity
        eye = torch.eye(2, 3, dtype=F64, device=device)[None]
        for h, w in [(1, 1), (2, 3), (5, 4), (1, 6)]:
            g = base_grid((h, w), align_corners, device=device, dtype=F64)
            torch.testing.assert_close(g.view(-1, 2).cpu(), ref_base_grid(h, w, align_corners), atol=1e-15, rtol=0)
            ref = F.affine_grid(eye, [1, 1, h, w], align_corners=align_corners)[0]
            torch.testing.assert_close(g, ref, atol=1e-15, rtol=0)

    def test_same_values_on_every_device(self, device, dtype):
        # bit for bit the CPU's grid (the pixel centres' fractions, correctly rounded): the
        # identity grid of every family is exact on every device (a CUDA division by a Python
        # number multiplies by its reciprocal and missed by 1 ulp on most sizes)
        for n in (3, 7, 28, 42, 60, 99):
            for align_corners in (False, True):
                g = base_grid((n, n), align_corners, device=device, dtype=dtype)
                assert torch.equal(g.cpu(), base_grid((n, n), align_corners, dtype=dtype))
        if dtype == F64:
            xs = base_grid((1, 60), device=device, dtype=dtype)[0, :, 0].tolist()
            assert xs == [(2 * j + 1) / 60 - 1 for j in range(60)]


# ----------------------------------------------------------------------------------------
class TestNormalizationMatrix:
    def test_smoke(self, device, dtype):
        assert_on(normalization_matrix((4, 6), device=device, dtype=dtype), (3, 3), dtype, device)
        assert normalization_matrix(4).dtype == F64

    def test_exceptions(self):
        with pytest.raises(ValueError, match=esc("size must be at least (2, 2) with align_corners=True, got (1, 4)")):
            normalization_matrix((1, 4), align_corners=True)
        with pytest.raises(ValueError, match="size must be positive"):
            normalization_matrix((0, 4))

    @pytest.mark.parametrize("align_corners", [False, True])
    def test_convention(self, align_corners):
        # pixel (row i, column j) is (x=j, y=i) for OpenCV and (centres(W)[j], centres(H)[i]) normalised
        h, w = 5, 7
        jj, ii = np.meshgrid(np.arange(w), np.arange(h))
        pix = torch.from_numpy(np.stack([jj.ravel(), ii.ravel(), np.ones(h * w)]))
        out = normalization_matrix((h, w), align_corners) @ pix
        torch.testing.assert_close(out[:2].T, ref_base_grid(h, w, align_corners), atol=1e-15, rtol=0)
        assert torch.equal(out[2], torch.ones(h * w, dtype=F64))

    @pytest.mark.parametrize("align_corners", [False, True])
    def test_volume_against_affine_grid(self, align_corners):
        # voxel (d, h, w) is (x=w, y=h, z=d); F.affine_grid's identity grid holds its normalised point
        d, h, w = 3, 5, 4
        zz, yy, xx = np.meshgrid(np.arange(d), np.arange(h), np.arange(w), indexing="ij")
        vox = torch.from_numpy(np.stack([xx.ravel(), yy.ravel(), zz.ravel(), np.ones(d * h * w)]))
        m = normalization_matrix((d, h, w), align_corners)
        assert m.shape == (4, 4)
        eye = torch.eye(3, 4, dtype=F64)[None]
        ref = torch.nn.functional.affine_grid(eye, [1, 1, d, h, w], align_corners=align_corners).view(-1, 3)
        torch.testing.assert_close((m @ vox)[:3].T, ref, atol=1e-15, rtol=0)
        with pytest.raises(ValueError, match=esc("at least (2, 2, 2) with align_corners=True, got (1, 4, 4)")):
            normalization_matrix((1, 4, 4), align_corners=True)


# ----------------------------------------------------------------------------------------
class TestToPixelMatrix:
    def test_smoke(self, device, dtype):
        theta = rand_params("affine", 2, 0.3, dtype=dtype, device=device).view(2, 2, 3)
        assert_on(to_pixel_matrix(theta, (12, 10)), (2, 3, 3), dtype, device)
        m = get_transform("projective").matrix(rand_params("projective", 2, 0.3, dtype=dtype, device=device))
        assert_on(to_pixel_matrix(m, 12, (9, 13), align_corners=True), (2, 3, 3), dtype, device)

    def test_exceptions(self):
        with pytest.raises(ValueError, match=esc("theta must have shape (B, 2, 3) or (B, 3, 3), got shape (2, 3)")):
            to_pixel_matrix(torch.eye(3)[:2], (4, 4))
        with pytest.raises(ValueError, match="in_size must be positive"):
            to_pixel_matrix(torch.eye(3)[None], (0, 4))
        with pytest.raises(ValueError, match="theta must be invertible, got a singular matrix"):
            to_pixel_matrix(torch.zeros(1, 2, 3), (4, 4))

    @pytest.mark.parametrize("align_corners", [False, True])
    def test_identity(self, align_corners, device):
        m = to_pixel_matrix(torch.eye(3, dtype=F64, device=device)[None], (5, 7), align_corners=align_corners)
        torch.testing.assert_close(m, torch.eye(3, dtype=F64, device=device)[None], atol=1e-14, rtol=0)

    def test_convention_shift(self):
        # on 4 px a pixel is 2/4 normalised: tx = 0.5 reads one pixel to the right, which OpenCV
        # writes as moving the content one pixel to the left, dst = src - 1
        theta = torch.tensor([[[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]]], dtype=F64)
        ref = torch.tensor([[[1.0, 0.0, -1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]], dtype=F64)
        torch.testing.assert_close(to_pixel_matrix(theta, (4, 4)), ref, atol=1e-15, rtol=0)

    @pytest.mark.parametrize("align_corners", [False, True])
    @pytest.mark.parametrize("out_size", [(20, 24), (15, 30)])
    def test_convention_opencv_warp_affine(self, align_corners, out_size):
        in_size = (20, 24)
        theta = rand_params("affine", 1, seed=1)
        m = to_pixel_matrix(get_transform("affine").matrix(theta), in_size, out_size, align_corners)[0].numpy()
        img, ref, inside = opencv_case("affine", m, in_size, out_size, seed=1)
        out = warp(torch.from_numpy(img)[None, None], theta.float(), "affine", out_size, align_corners=align_corners)
        check_opencv(out[0, 0].numpy(), ref, inside)

    @pytest.mark.parametrize("align_corners", [False, True])
    @pytest.mark.parametrize("out_size", [(20, 24), (26, 18)])
    def test_convention_opencv_warp_perspective(self, align_corners, out_size):
        in_size = (20, 24)
        p = rand_params("projective", 1, strength=0.7, seed=2)
        m = to_pixel_matrix(get_transform("projective").matrix(p), in_size, out_size, align_corners)[0].numpy()
        img, ref, inside = opencv_case("projective", m, in_size, out_size, seed=2)
        out = warp(torch.from_numpy(img)[None, None], p.float(), "projective", out_size, align_corners=align_corners)
        check_opencv(out[0, 0].numpy(), ref, inside)

    def test_gradcheck(self, device):
        theta = get_transform("projective").matrix(rand_params("projective", 2, 0.3, seed=3, device=device))
        check_gradients(lambda t: to_pixel_matrix(t, (5, 6), (4, 7)), theta.requires_grad_())


# ----------------------------------------------------------------------------------------
class TestFromPixelMatrix:
    def test_smoke(self, device, dtype):
        m = torch.eye(3, dtype=dtype, device=device).expand(2, 3, 3)
        assert_on(from_pixel_matrix(m, (12, 10)), (2, 3, 3), dtype, device)
        assert_on(from_pixel_matrix(m[:, :2], 12, (9, 13), True), (2, 3, 3), dtype, device)

    def test_exceptions(self):
        with pytest.raises(ValueError, match=esc("m must have shape (B, 2, 3) or (B, 3, 3), got shape (1, 4, 4)")):
            from_pixel_matrix(torch.eye(4)[None], (4, 4))
        with pytest.raises(ValueError, match="m must be invertible, got a singular matrix"):
            from_pixel_matrix(torch.zeros(1, 3, 3), (4, 4))
        with pytest.raises(ValueError, match="out_size must be positive"):
            from_pixel_matrix(torch.eye(3)[None], (4, 4), (4, 0))

    @pytest.mark.parametrize("align_corners", [False, True])
    def test_identity(self, align_corners, device):
        m = from_pixel_matrix(torch.eye(3, dtype=F64, device=device)[None], (5, 7), align_corners=align_corners)
        torch.testing.assert_close(m, torch.eye(3, dtype=F64, device=device)[None], atol=1e-14, rtol=0)

    @pytest.mark.parametrize("align_corners", [False, True])
    def test_roundtrip(self, align_corners, device):
        for name in ["affine", "projective"]:
            m = get_transform(name).matrix(rand_params(name, 3, seed=5, device=device))
            for out_size in [None, (9, 13)]:
                pix = to_pixel_matrix(m, (12, 10), out_size, align_corners)
                torch.testing.assert_close(from_pixel_matrix(pix, (12, 10), out_size, align_corners), m)
        theta = rand_params("affine", 2, device=device).view(2, 2, 3)  # (B, 2, 3) accepted too
        back = from_pixel_matrix(to_pixel_matrix(theta, (8, 8)), (8, 8))
        torch.testing.assert_close(back[:, :2], theta)

    @pytest.mark.parametrize("align_corners", [False, True])
    def test_convention_opencv_rotation(self, align_corners):
        # a matrix made by OpenCV itself, converted to stnkit's convention
        in_size = out_size = (22, 19)
        m = np.vstack([cv2.getRotationMatrix2D((8.3, 11.1), 23.0, 0.9), [0, 0, 1]])
        img, ref, inside = opencv_case("affine", m, in_size, out_size, seed=4)
        theta = from_pixel_matrix(torch.from_numpy(m)[None], in_size, out_size, align_corners)
        torch.testing.assert_close(theta[:, 2], torch.tensor([[0.0, 0.0, 1.0]], dtype=F64))
        out = warp(torch.from_numpy(img)[None, None], theta[:, :2].float(), "affine", align_corners=align_corners)
        check_opencv(out[0, 0].numpy(), ref, inside)

    def test_gradcheck(self, device):
        m = torch.eye(3, dtype=F64, device=device) + 0.1 * rand(2, 3, 3, seed=6, device=device)
        check_gradients(lambda m: from_pixel_matrix(m, (5, 6), (4, 7), True), m.requires_grad_())


# ----------------------------------------------------------------------------------------
class TestSample:
    def test_smoke(self, device, dtype):
        x = rand(2, 3, 6, 7, dtype=dtype, device=device)
        grid = rand(2, 4, 5, 2, seed=1, device=device) * 2 - 1  # float64 grid: cast to x's dtype
        assert_on(sample(x, grid), (2, 3, 4, 5), dtype, device)

    def test_exceptions(self):
        x = torch.rand(2, 3, 8, 8)
        with pytest.raises(ValueError, match=esc("grid must have shape (2, H_out, W_out, 2), got (3, 4, 4, 2)")):
            sample(x, torch.zeros(3, 4, 4, 2))
        with pytest.raises(ValueError, match=esc("grid must have shape (2, H_out, W_out, 2), got (2, 4, 4, 3)")):
            sample(x, torch.zeros(2, 4, 4, 3))
        with pytest.raises(ValueError, match="grid must have shape .* got list"):
            sample(x, [0.0])
        with pytest.raises(
            ValueError, match=esc("x must have shape (B, C, H, W) or (B, C, D, H, W), got shape (8, 8)")
        ):
            sample(torch.rand(8, 8), torch.zeros(1, 4, 4, 2))
        with pytest.raises(ValueError, match="mode must be one of 'bilinear', 'nearest', 'bicubic', got 'area'"):
            sample(x, torch.zeros(2, 4, 4, 2), mode="area")

    @pytest.mark.parametrize("align_corners", [False, True])
    def test_identity(self, align_corners, device):
        x = rand(2, 3, 5, 6, device=device)
        grid = base_grid((5, 6), align_corners, device=device, dtype=F64).expand(2, -1, -1, -1)
        torch.testing.assert_close(sample(x, grid, align_corners=align_corners), x, atol=1e-12, rtol=0)

    def test_convention_is_grid_sample(self, device):
        x = rand(2, 2, 6, 7, device=device)
        grid = rand(2, 4, 5, 2, seed=1, device=device) * 2.4 - 1.2  # partly outside: the padding
        for mode, pad, ac in itertools.product(MODES, PADDING_MODES, [False, True]):
            ref = F.grid_sample(x, grid, mode=mode, padding_mode=pad, align_corners=ac)
            assert torch.equal(sample(x, grid, mode, pad, ac), ref)

    def test_gradcheck(self, device):
        x = rand(1, 2, 4, 5, device=device).requires_grad_()
        grid = (rand(1, 3, 3, 2, seed=1, device=device) * 1.6 - 0.8).requires_grad_()
        check_gradients(lambda x, g: sample(x, g, padding_mode="border"), x, grid)


# ----------------------------------------------------------------------------------------
class TestWarp:
    # -- smoke ----------------------------------------------------------------------------
    @pytest.mark.parametrize("name", FAMILIES)
    def test_smoke(self, name, device, dtype):
        x = rand(2, 3, 6, 7, dtype=dtype, device=device)
        p = rand_params(name, 2, 0.3, dtype=dtype, device=device)
        assert_on(warp(x, p, name), (2, 3, 6, 7), dtype, device)
        assert_on(warp(x, p, get_transform(name), out_size=4), (2, 3, 4, 4), dtype, device)
        assert_on(warp(x, p, name, out_size=(5, 9), mode="bicubic"), (2, 3, 5, 9), dtype, device)

    # -- exceptions -----------------------------------------------------------------------
    @pytest.mark.parametrize("shape", [(3, 8, 8), (8, 8), (1, 1, 2, 3, 8, 8)])  # 5-D: volumes (test_families_3d)
    def test_exception_x_rank(self, shape):
        params = get_transform("affine").identity(1)
        with pytest.raises(
            ValueError, match=esc(f"x must have shape (B, C, H, W) or (B, C, D, H, W), got shape {shape}")
        ):
            warp(torch.rand(shape), params)

    @pytest.mark.parametrize("dtype", [torch.int64, torch.uint8, torch.bool])
    def test_exception_x_dtype(self, dtype):
        x = torch.zeros(1, 1, 4, 4, dtype=dtype)
        with pytest.raises(TypeError, match=f"x must have a floating dtype.*got {esc(str(dtype))}"):
            warp(x, get_transform("affine").identity(1))

    def test_exception_x_not_a_tensor(self):
        with pytest.raises(TypeError, match="x must be a torch.Tensor, got list"):
            warp([[1.0]], get_transform("affine").identity(1))

    @pytest.mark.parametrize("shape", [(0, 1, 4, 4), (1, 0, 4, 4), (1, 1, 0, 4)])
    def test_exception_x_empty(self, shape):
        with pytest.raises(ValueError, match="x must be non-empty.*got shape " + esc(str(shape))):
            warp(torch.rand(shape), get_transform("affine").identity(1))

    @pytest.mark.parametrize("name", FAMILIES)
    def test_exception_params_count(self, name):
        n = get_transform(name).num_params
        with pytest.raises(
            ValueError, match=esc(f"params for transform '{name}' must have shape (B, {n}), got shape (2, {n + 1})")
        ):
            warp(torch.rand(2, 3, 8, 8), torch.zeros(2, n + 1), name)

    def test_exception_params_rank(self):
        x = torch.rand(2, 3, 8, 8)
        with pytest.raises(ValueError, match=esc("must have shape (B, 6), got shape (6,)")):
            warp(x, torch.zeros(6))
        with pytest.raises(ValueError, match=esc("must have shape (B, 8), got shape (2, 2, 3)")):
            warp(x, torch.zeros(2, 2, 3), "projective")  # only affine takes a (B, 2, 3) theta

    def test_exception_params_dtype(self):
        with pytest.raises(TypeError, match="params must have a floating dtype.*got torch.int64"):
            warp(torch.rand(2, 3, 8, 8), torch.zeros(2, 6, dtype=torch.int64))

    @pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
    @pytest.mark.parametrize("name", FAMILIES)
    def test_exception_params_not_finite(self, name, bad):
        p = get_transform(name).identity(2)
        p[1, 0] = bad
        with pytest.raises(ValueError, match="params must be finite, got NaN or inf"):
            warp(torch.rand(2, 3, 8, 8), p, name)

    def test_exception_batch_mismatch(self):
        with pytest.raises(ValueError, match=esc("params must have the same batch size as x (2), got 3")):
            warp(torch.rand(2, 3, 8, 8), get_transform("affine").identity(3))

    def test_exception_params_on_another_device(self):
        x = torch.rand(1, 1, 4, 4, device="meta")
        with pytest.raises(ValueError, match="params must be on the device of x"):
            warp(x, get_transform("affine").identity(1), "affine")

    @pytest.mark.parametrize("size", [0, -3, (0, 5), (4, -1)])
    def test_exception_out_size_not_positive(self, size):
        with pytest.raises(ValueError, match="out_size must be positive, got"):
            warp(torch.rand(2, 3, 8, 8), get_transform("affine").identity(2), out_size=size)

    @pytest.mark.parametrize("size", [2.5, (4,), (4, 4, 4), (4.0, 4), "8", True])
    def test_exception_out_size_type(self, size):
        with pytest.raises(TypeError, match=r"out_size must be an int or a pair \(H, W\) of ints, got"):
            warp(torch.rand(2, 3, 8, 8), get_transform("affine").identity(2), out_size=size)

    def test_exception_mode_and_padding(self):
        x, p = torch.rand(2, 3, 8, 8), get_transform("affine").identity(2)
        with pytest.raises(ValueError, match="mode must be one of 'bilinear', 'nearest', 'bicubic', got 'linear'"):
            warp(x, p, mode="linear")
        with pytest.raises(ValueError, match="padding_mode must be one of 'zeros', 'border', 'reflection', got 'wrap'"):
            warp(x, p, padding_mode="wrap")

    def test_exception_transform(self):
        x = torch.rand(2, 3, 8, 8)
        with pytest.raises(ValueError, match="unknown transform 'rigid'; valid names: " + ", ".join(FAMILIES)):
            warp(x, torch.zeros(2, 3), "rigid")
        with pytest.raises(TypeError, match="transform must be a name or a TransformFamily, got int"):
            warp(x, torch.zeros(2, 6), 6)

    # -- identity -------------------------------------------------------------------------
    @pytest.mark.parametrize("name", FAMILIES)
    @pytest.mark.parametrize("align_corners", [False, True])
    @pytest.mark.parametrize("channels", [1, 3])
    def test_identity_float64_every_size(self, name, align_corners, channels):
        fam = get_transform(name)
        for h, w in [(5, 6), (28, 28), (7, 3), (1, 4), (9, 1), (32, 17)]:
            x = torch.rand(2, channels, h, w, dtype=F64)
            y = warp(x, fam.identity(2, dtype=F64), name, align_corners=align_corners)
            torch.testing.assert_close(y, x, atol=1e-6, rtol=0)

    @pytest.mark.parametrize("name", FAMILIES)
    @pytest.mark.parametrize("align_corners", [False, True])
    @pytest.mark.parametrize("channels", [1, 3])
    def test_identity_float32_small(self, name, align_corners, channels, device):
        # float32 holds 1e-6 on small sizes; on 28x28 affine_grid's own float32 rounding
        # of the base grid reaches ~2e-6 (see test_identity_float32_28x28)
        fam = get_transform(name)
        for h, w in [(5, 6), (8, 8), (3, 4)]:
            x = torch.rand(2, channels, h, w, device=device)
            y = warp(x, fam.identity(2, device=device), name, align_corners=align_corners)
            torch.testing.assert_close(y, x, atol=1e-6, rtol=0)

    @pytest.mark.parametrize("name", FAMILIES)
    def test_identity_float32_28x28(self, name, device):
        # honest bound for float32 at MNIST size: a few ulp of the [0, 1] values
        x = torch.rand(2, 1, 28, 28, device=device)
        y = warp(x, get_transform(name).identity(2, device=device), name)
        torch.testing.assert_close(y, x, atol=5e-6, rtol=0)

    @pytest.mark.parametrize("mode", ["nearest", "bicubic"])
    def test_identity_other_modes(self, mode):
        x = torch.rand(1, 2, 6, 7, dtype=F64)
        for name in FAMILIES:
            y = warp(x, get_transform(name).identity(1, dtype=F64), name, mode=mode)
            torch.testing.assert_close(y, x, atol=1e-6, rtol=0)

    # -- convention -----------------------------------------------------------------------
    @pytest.mark.parametrize(
        ("mode", "padding_mode", "align_corners"), list(itertools.product(MODES, PADDING_MODES, [False, True]))
    )
    @pytest.mark.parametrize("dtype", [torch.float32, F64])
    def test_convention_affine_is_affine_grid_and_grid_sample(self, mode, padding_mode, align_corners, dtype, device):
        sizes = [((7, 9), (7, 9)), ((7, 9), (5, 11)), ((4, 5), (9, 8))]
        for i, (in_size, out_size) in enumerate(sizes):
            x = torch.rand(3, 2, *in_size, dtype=dtype, device=device)
            # large parameters exercise the padding
            theta = rand_params("affine", 3, strength=2.0, seed=i, dtype=dtype, device=device)
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

    @pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
    @pytest.mark.parametrize("name", FAMILIES)
    def test_convention_low_precision_follows_the_input(self, name, dtype):
        # dtype and device follow the input; the cached operators are kept per dtype
        fam = get_transform(name)
        x = torch.rand(3, 2, 12, 10).to(dtype)
        p = rand_params(name, 3, strength=0.5, seed=1, dtype=torch.float32).to(dtype)
        ref = warp(x.float(), p.float(), fam)  # the same (rounded) inputs in float32
        low = warp(x, p, fam)
        assert low.dtype == dtype
        # grid points rounded to the dtype move samples by up to a few eps x the image's slope (~5 per unit)
        torch.testing.assert_close(low.float(), ref, atol=20 * torch.finfo(dtype).eps, rtol=0)

    # -- degenerate transforms read the padding: finite output, never NaN -------------------
    @pytest.mark.parametrize("name", ["attention", "similarity", "affine", "projective"])
    def test_degenerate_singular_matrix_gives_a_constant_image(self, name):
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

    def test_degenerate_rank_one_affine(self):
        # both rank-one maps send the plane onto the line y = 2x (first) and y = x (second)
        x = torch.rand(2, 1, 8, 8)
        p = torch.tensor([[1.0, 2.0, 0.0, 2.0, 4.0, 0.0], [0.5, 0.5, 0.1, 0.5, 0.5, 0.1]])
        assert torch.isfinite(warp(x, p, "affine")).all()
        g = get_transform("affine").grid(p, (8, 8))
        torch.testing.assert_close(g[0, ..., 1], 2 * g[0, ..., 0])
        torch.testing.assert_close(g[1, ..., 1], g[1, ..., 0])

    @pytest.mark.parametrize("name", FAMILIES)
    @pytest.mark.parametrize("dtype", [torch.float32, F64])
    def test_degenerate_huge_params(self, name, dtype):
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
    def test_degenerate_huge_params_have_finite_gradients(self, name):
        fam = get_transform(name)
        p = torch.full((1, fam.num_params), 1e30, requires_grad=True)
        x = torch.rand(1, 1, 5, 6, requires_grad=True)
        warp(x, p, fam, padding_mode="border").sum().backward()
        assert torch.isfinite(p.grad).all() and torch.isfinite(x.grad).all()

    # -- gradcheck ------------------------------------------------------------------------
    @pytest.mark.parametrize("name", FAMILIES)
    @pytest.mark.parametrize("align_corners", [False, True])
    def test_gradcheck(self, name, align_corners, device):
        fam = get_transform(name)
        x = rand(1, 1, 5, 6, device=device).requires_grad_()
        p = rand_params(name, 1, strength=0.5, seed=7, device=device).requires_grad_()
        check_gradients(lambda x, p: warp(x, p, fam, align_corners=align_corners), x, p)
        # a different output size goes through the same code with another grid
        check_gradients(lambda x, p: warp(x, p, fam, out_size=(3, 4), align_corners=align_corners), x, p)

    def test_gradcheck_bicubic(self, device):
        x = rand(1, 2, 5, 6, device=device).requires_grad_()
        p = rand_params("affine", 1, strength=0.5, device=device).requires_grad_()
        check_gradients(lambda x, p: warp(x, p, "affine", mode="bicubic", padding_mode="border"), x, p)

    # -- trace and compile ----------------------------------------------------------------
    @pytest.mark.filterwarnings(*TRACE_WARNINGS)
    @pytest.mark.parametrize("name", FAMILIES)
    def test_trace(self, name, device):
        # the data-dependent checks are skipped while tracing, and the guards take the traced branch
        fam = get_transform(name)

        def fn(x, p):
            return warp(x, p, fam, out_size=(8, 8))

        traced = torch.jit.trace(fn, (rand(2, 3, 8, 8, device=device), rand_params(name, 2, 0.5, device=device)))
        x, p = rand(2, 3, 8, 8, seed=1, device=device), rand_params(name, 2, 0.5, seed=1, device=device)
        torch.testing.assert_close(traced(x, p), fn(x, p))

    @pytest.mark.filterwarnings(*TRACE_WARNINGS)
    def test_trace_without_out_size(self):
        # regression: under jit.trace x.shape holds 0-dim tensors; the output keeps the input's size
        fam = get_transform("affine")
        traced = torch.jit.trace(lambda x, p: warp(x, p, fam), (rand(1, 1, 4, 6), rand_params("affine", 1, 0.5)))
        x, p = rand(1, 1, 4, 6, seed=3), rand_params("affine", 1, 0.5, seed=3)
        out = traced(x, p)
        assert out.shape == (1, 1, 4, 6)
        torch.testing.assert_close(out, warp(x, p, fam))

    @pytest.mark.parametrize("name", ["projective", "tps"])
    def test_compile_fullgraph(self, name):
        # fullgraph: the checks and guards must not break the graph. aot_eager traces the
        # backward as well, without inductor's slow code generation (the module's inductor
        # compile is in test_nn.py)
        fam = get_transform(name)
        compiled = torch.compile(lambda x, p: warp(x, p, fam), fullgraph=True, backend="aot_eager")
        for seed in (1, 2):
            x = rand(2, 3, 8, 8, seed=seed, dtype=torch.float32).requires_grad_()
            p = rand_params(name, 2, 0.5, seed=seed, dtype=torch.float32).requires_grad_()
            out, ref = compiled(x, p), warp(x, p, fam)
            torch.testing.assert_close(out, ref)
            grads = torch.autograd.grad(out.square().sum(), (x, p))
            torch.testing.assert_close(grads, torch.autograd.grad(ref.square().sum(), (x, p)))


# ----------------------------------------------------------------------------------------
class TestComposeGrid:
    """One sampling through compose_grid equals warping in series (params[0] first)."""

    def test_smoke(self, device, dtype):
        params = [rand_params(n, 2, 0.3, dtype=dtype, device=device) for n in ("similarity", "tps")]
        assert_on(compose_grid(params, ["similarity", "tps"], (5, 7)), (2, 5, 7, 2), dtype, device)
        assert_on(compose_grid(params[:1], [get_transform("similarity")], 4), (2, 4, 4, 2), dtype, device)

    def test_exceptions(self):
        p = get_transform("affine").identity(1)
        with pytest.raises(
            ValueError, match="params and transforms must be non-empty lists of equal length, got 2 and 1"
        ):
            compose_grid([p, p], ["affine"], (4, 4))
        with pytest.raises(ValueError, match="got 0 and 0"):
            compose_grid([], [], (4, 4))
        with pytest.raises(TypeError, match="params and transforms must be lists, got Tensor and list"):
            compose_grid(p, ["affine"], 4)
        a, b = get_transform("affine").identity(2), get_transform("tps").identity(3)
        with pytest.raises(ValueError, match=esc("must have the same batch size as params (2), got 3")):
            compose_grid([a, b], ["affine", "tps"], (4, 4))

    @pytest.mark.parametrize("align_corners", [False, True])
    def test_identity(self, align_corners, device):
        params = [get_transform(n).identity(2, dtype=F64, device=device) for n in FAMILIES]
        grid = compose_grid(params, FAMILIES, (5, 7), align_corners)
        ident = base_grid((5, 7), align_corners, device=device, dtype=F64).expand(2, -1, -1, -1)
        torch.testing.assert_close(grid, ident, atol=1e-12, rtol=0)

    @pytest.mark.parametrize("align_corners", [False, True])
    @pytest.mark.parametrize("last", ["tps", "projective", "affine"])
    def test_convention_linear_image_exact(self, align_corners, last):
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

    def test_convention_smooth_image_tps_first(self):
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

    @pytest.mark.parametrize("name", MATRIX_FAMILIES)
    def test_convention_single_stage_is_the_documented_map(self, name, device):
        # one stage: the output pixel centres through the matrix written from the docs
        p = rand_params(name, 2, seed=40, device=device)
        ref = apply_homogeneous(documented_matrix(name, p), ref_base_grid(5, 7, False).to(device)[None])
        torch.testing.assert_close(compose_grid([p], [name], (5, 7)).view(2, -1, 2), ref)
        # control: the reference tells parameters apart
        other = compose_grid([rand_params(name, 2, seed=41, device=device)], [name], (5, 7)).view(2, -1, 2)
        assert (other - ref).abs().max() > 1e-2

    def test_convention_single_stage_tps_is_scipy_spline(self):
        fam = get_transform("tps")
        c = np.linspace(-1, 1, 4)
        cy, cx = np.meshgrid(c, c, indexing="ij")
        ctrl = np.stack([cx.ravel(), cy.ravel()], axis=-1)
        off = np.random.default_rng(42).normal(0, 0.2, ctrl.shape)
        rbf = RBFInterpolator(ctrl, ctrl + off, kernel="thin_plate_spline", degree=1)
        grid = compose_grid([torch.from_numpy(off.reshape(1, -1))], [fam], (5, 7))
        np.testing.assert_allclose(grid.view(-1, 2).numpy(), rbf(ref_base_grid(5, 7, False).numpy()), atol=1e-9)

    def test_convention_matrix_product(self, device):
        # for matrix families the chain is the product T_0 T_1 T_2 of the documented matrices
        names = ["affine", "similarity", "projective"]
        params = [rand_params(n, 3, seed=50 + i, device=device) for i, n in enumerate(names)]
        m = torch.eye(3, dtype=F64, device=device)
        for n, p in zip(names, params):
            m = m @ documented_matrix(n, p)
        ref = apply_homogeneous(m, ref_base_grid(4, 9, False).to(device)[None].expand(3, -1, -1))
        torch.testing.assert_close(compose_grid(params, names, (4, 9)), ref.view(3, 4, 9, 2))

    def test_gradcheck(self, device):
        pa = rand_params("similarity", 1, 0.5, device=device).requires_grad_()
        pb = rand_params("tps", 1, 0.5, device=device).requires_grad_()
        check_gradients(lambda a, b: compose_grid([a, b], ["similarity", "tps"], (3, 4)), pa, pb)

    @pytest.mark.filterwarnings(*TRACE_WARNINGS)
    def test_trace(self, device):
        names = ["projective", "tps"]

        def fn(a, b):
            return compose_grid([a, b], names, (5, 6))

        traced = torch.jit.trace(fn, tuple(rand_params(n, 2, 0.5, device=device) for n in names))
        params = [rand_params(n, 2, 0.5, seed=1, device=device) for n in names]
        torch.testing.assert_close(traced(*params), fn(*params))


# ----------------------------------------------------------------------------------------
class TestGetTransform:
    def test_smoke(self):
        assert list(TRANSFORMS) == FAMILIES
        for name, n in zip(FAMILIES, [2, 3, 4, 6, 8, 32]):
            fam = get_transform(name)
            assert isinstance(fam, TRANSFORMS[name]) and fam.name == name and fam.num_params == n
            assert get_transform(fam) is fam  # an instance passes through
        assert get_transform("tps", grid_size=3).num_params == 18

    def test_exceptions(self):
        with pytest.raises(ValueError, match="unknown transform 'rigid'; valid names: " + ", ".join(FAMILIES)):
            get_transform("rigid")
        with pytest.raises(TypeError, match="transform must be a name or a TransformFamily, got int"):
            get_transform(6)
        with pytest.raises(TypeError, match="invalid options for transform 'affine'"):
            get_transform("affine", grid_size=3)
        with pytest.raises(ValueError, match="options can only be given with a transform name"):
            get_transform(get_transform("tps"), grid_size=3)

    def test_instances_are_shared(self):
        assert get_transform("tps") is get_transform("tps")
        assert get_transform("tps", grid_size=3) is get_transform("tps", grid_size=3)
        assert get_transform("tps", grid_size=3) is not get_transform("tps")


# ----------------------------------------------------------------------------------------
class TestTransformFamily:
    """The API every family has: identity, random, bound, grid, transform_points."""

    @pytest.mark.parametrize("name", FAMILIES)
    def test_smoke(self, name, device, dtype):
        fam = get_transform(name)
        assert isinstance(fam, TransformFamily)
        n = fam.num_params
        assert_on(fam.identity(3, device=device, dtype=dtype), (3, n), dtype, device)
        p = fam.random(3, 0.5, generator=torch.Generator().manual_seed(0), device=device, dtype=dtype)
        assert_on(p, (3, n), dtype, device)
        assert_on(fam.bound(p), (3, n), dtype, device)
        assert_on(fam.grid(p, (4, 5)), (3, 4, 5, 2), dtype, device)
        assert_on(fam.grid(p, 6, align_corners=True), (3, 6, 6, 2), dtype, device)
        assert_on(fam.transform_points(p, rand(3, 7, 2, dtype=dtype, device=device)), (3, 7, 2), dtype, device)

    @pytest.mark.parametrize("bad", [0, -1])
    def test_exception_identity_batch_size(self, bad):
        with pytest.raises(ValueError, match=f"batch_size must be a positive int, got {bad!r}"):
            get_transform("affine").identity(bad)

    @pytest.mark.parametrize("bad", [2.0, True])
    def test_exception_identity_batch_size_type(self, bad):
        with pytest.raises(TypeError, match=f"batch_size must be an int, got {type(bad).__name__} {bad!r}"):
            get_transform("affine").identity(bad)

    def test_exception_empty_batch(self):
        with pytest.raises(ValueError, match=esc("params must have a non-empty batch, got shape (0, 6)")):
            get_transform("affine").grid(torch.zeros(0, 6), (4, 4))

    @pytest.mark.parametrize("shape", [(5, 2), (1, 5, 3), (1, 5, 2, 1)])
    @pytest.mark.parametrize("name", FAMILIES)
    def test_exception_points_shape(self, name, shape):
        fam = get_transform(name)
        with pytest.raises(
            ValueError, match=esc(f"points must have shape (B, N, 2) with x before y, got shape {shape}")
        ):
            fam.transform_points(fam.identity(1), torch.zeros(shape))

    @pytest.mark.parametrize("name", FAMILIES)
    def test_exception_points_batch(self, name):
        fam = get_transform(name)
        with pytest.raises(ValueError, match=esc("points must have the same batch size as params (2), got 3")):
            fam.transform_points(fam.identity(2), torch.zeros(3, 4, 2))

    def test_exception_points_dtype(self):
        fam = get_transform("affine")
        with pytest.raises(TypeError, match="points must have a floating dtype"):
            fam.transform_points(fam.identity(1), torch.zeros(1, 4, 2, dtype=torch.int32))

    @pytest.mark.parametrize("name", FAMILIES)
    def test_identity_grid_is_exact(self, name, device):
        # the cached operators keep the identity exact: zero coefficients add nothing
        fam = get_transform(name)
        ident = fam.identity(3, dtype=F64, device=device)
        for ac in (False, True):
            ref = base_grid((5, 7), ac, dtype=F64, device=device).expand(3, -1, -1, -1)
            assert torch.equal(fam.grid(ident, (5, 7), ac), ref)

    @pytest.mark.parametrize("name", FAMILIES)
    def test_identity_bound_and_random(self, name, device):
        # bound(0) and random(strength=0) are the identity; random's noise is drawn on the CPU
        fam = get_transform(name)
        ident = fam.identity(2, dtype=F64, device=device)
        assert torch.equal(fam.bound(torch.zeros_like(ident)), ident)
        assert torch.equal(fam.random(2, 0.0, dtype=F64, device=device), ident)
        seeded = [
            fam.random(2, generator=torch.Generator().manual_seed(3), dtype=F64, device=d) for d in (device, "cpu")
        ]
        assert torch.equal(seeded[0].cpu(), seeded[1]) and not torch.equal(seeded[1], ident.cpu())

    @pytest.mark.parametrize("name", FAMILIES)
    def test_convention_transform_points_matches_grid(self, name):
        fam = get_transform(name)

        @PROPERTY
        @given(p=_params(name), h=st.integers(2, 9), w=st.integers(2, 9), ac=st.booleans())
        def check(p, h, w, ac):
            grid = fam.grid(p, (h, w), ac).view(1, -1, 2)
            pts = fam.transform_points(p, ref_base_grid(h, w, ac)[None])
            torch.testing.assert_close(pts, grid, atol=1e-9, rtol=1e-9)

        check()

    @pytest.mark.parametrize("name", FAMILIES)
    @given(strength=st.floats(0.0, 40.0), seed=st.integers(0, 2**16))
    @settings(max_examples=25, deadline=None)
    def test_guard_only_when_needed(self, name, strength, seed):
        # grids skip the NaN/limit guard when the parameters prove it idle; the result must not change
        fam = get_transform(name)
        p = rand_params(name, 3, strength=strength, seed=seed)
        pts = ref_base_grid(6, 5, False)[None].expand(3, -1, -1)
        if name == "tps":
            ref = fam.transform_points(p, pts)
        else:  # the homogeneous product written out, with the documented guards
            m = documented_matrix(name, p)
            q = pts @ m[:, :2, :2].transpose(1, 2) + m[:, None, :2, 2]
            w = pts @ m[:, 2:, :2].transpose(1, 2) + m[:, None, 2:, 2]
            w = torch.where(w.abs() < 1e-8, torch.where(w < 0, -1e-8, 1e-8), w)
            ref = q / w
        ref = torch.nan_to_num(ref, nan=GRID_LIMIT, posinf=GRID_LIMIT, neginf=-GRID_LIMIT).clamp(
            -GRID_LIMIT, GRID_LIMIT
        )
        torch.testing.assert_close(fam.grid(p, (6, 5)).view(3, -1, 2), ref, atol=1e-9 * max(1.0, strength), rtol=1e-9)

    @pytest.mark.parametrize("name", FAMILIES)
    def test_gradcheck_transform_points(self, name, device):
        fam = get_transform(name)
        p = rand_params(name, 2, strength=0.5, seed=8, device=device).requires_grad_()
        pts = (rand(2, 7, 2, seed=8, device=device) * 2 - 1).requires_grad_()
        check_gradients(fam.transform_points, p, pts)

    @pytest.mark.parametrize("name", FAMILIES)
    def test_gradcheck_grid(self, name, device):
        fam = get_transform(name)
        p = rand_params(name, 2, strength=0.5, seed=9, device=device).requires_grad_()
        check_gradients(lambda p: fam.grid(p, (3, 4), True), p)


# ----------------------------------------------------------------------------------------
class TestMatrixFamily:
    """matrix, from_matrix, compose and inverse of the five matrix families."""

    @pytest.mark.parametrize("name", MATRIX_FAMILIES)
    def test_smoke(self, name, device, dtype):
        fam = get_transform(name)
        assert isinstance(fam, MatrixFamily)
        a, b = (rand_params(name, 3, 0.3, seed=s, dtype=dtype, device=device) for s in (1, 2))
        assert_on(fam.matrix(a), (3, 3, 3), dtype, device)
        assert_on(fam.from_matrix(fam.matrix(a)), (3, fam.num_params), dtype, device)
        assert_on(fam.compose(a, b), (3, fam.num_params), dtype, device)
        assert_on(fam.inverse(a), (3, fam.num_params), dtype, device)

    def test_exceptions(self):
        with pytest.raises(ValueError, match=esc("m must have shape (B, 3, 3), got shape (2, 2, 3)")):
            get_transform("affine").from_matrix(torch.zeros(2, 2, 3))
        fam = get_transform("similarity")
        with pytest.raises(
            ValueError, match=esc("b for transform 'similarity' must have shape (B, 4), got shape (1, 3)")
        ):
            fam.compose(fam.identity(1), torch.zeros(1, 3))
        with pytest.raises(ValueError, match="a must be finite"):
            fam.compose(torch.full((1, 4), math.nan), fam.identity(1))

    @pytest.mark.parametrize("name", ["attention", "similarity", "affine", "projective"])
    def test_exception_inverse_of_singular(self, name):
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
    def test_exception_inverse_of_numerically_singular(self, name):
        # a scale of 1e-40 is a float32 denormal: the LU pivot is not exactly zero but the
        # inverse overflows; it must raise, not return NaN parameters
        p = get_transform(name).identity(1)
        p[0, 0] = 1e-40
        with pytest.raises(ValueError, match="singular"):
            get_transform(name).inverse(p)

    @pytest.mark.parametrize("name", MATRIX_FAMILIES)
    def test_identity(self, name, device):
        fam = get_transform(name)
        ident = fam.identity(2, dtype=F64, device=device)
        assert torch.equal(fam.matrix(ident), torch.eye(3, dtype=F64, device=device).expand(2, 3, 3))
        p = rand_params(name, 2, seed=10, device=device)
        torch.testing.assert_close(fam.compose(p, ident), p, atol=1e-15, rtol=0)
        torch.testing.assert_close(fam.compose(ident, p), p, atol=1e-15, rtol=0)

    @pytest.mark.parametrize("name", MATRIX_FAMILIES)
    def test_convention_matrix_is_documented(self, name, device):
        p = rand_params(name, 4, seed=11, device=device)
        torch.testing.assert_close(get_transform(name).matrix(p), documented_matrix(name, p), atol=1e-15, rtol=0)
        torch.testing.assert_close(get_transform(name).from_matrix(documented_matrix(name, p)), p)

    @pytest.mark.parametrize("name", ["attention", "similarity", "affine", "projective"])
    def test_inverse_of_regular(self, name, device):
        # far from the identity too (strength 1): the matrices multiply to I both ways (up to
        # scale: a homography is normalised to h33 = 1)
        fam = get_transform(name)
        p = rand_params(name, 4, seed=9, device=device)
        m, m_inv = documented_matrix(name, p), documented_matrix(name, fam.inverse(p))
        eye = torch.eye(3, dtype=F64, device=device).expand(4, 3, 3)
        for prod in (m_inv @ m, m @ m_inv):
            torch.testing.assert_close(prod / prod[:, 2:, 2:], eye, atol=1e-12, rtol=0)

    @pytest.mark.parametrize("name", MATRIX_FAMILIES)
    def test_law_compose_with_inverse_is_identity(self, name):
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
    def test_law_compose_is_associative(self, name):
        fam = get_transform(name)

        @PROPERTY
        @given(a=_params(name), b=_params(name), c=_params(name))
        def check(a, b, c):
            left = fam.matrix(fam.compose(fam.compose(a, b), c))
            right = fam.matrix(fam.compose(a, fam.compose(b, c)))
            torch.testing.assert_close(left, right, atol=1e-9, rtol=1e-9)

        check()

    @pytest.mark.parametrize("name", MATRIX_FAMILIES)
    def test_law_compose_applies_b_first(self, name):
        fam = get_transform(name)

        @PROPERTY
        @given(a=_params(name), b=_params(name), seed=st.integers(0, 2**16))
        def check(a, b, seed):
            pts = torch.rand(1, 9, 2, dtype=F64, generator=torch.Generator().manual_seed(seed)) * 2 - 1
            chained = fam.transform_points(a, fam.transform_points(b, pts))
            torch.testing.assert_close(fam.transform_points(fam.compose(a, b), pts), chained, atol=1e-9, rtol=1e-9)

        check()

    @pytest.mark.parametrize("name", ["translation", "attention", "similarity", "affine"])
    def test_law_compose_equals_sequential_warps(self, name):
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

    @pytest.mark.parametrize("name", MATRIX_FAMILIES)
    def test_gradcheck_compose_and_inverse(self, name, device):
        fam = get_transform(name)
        a, b = (rand_params(name, 2, 0.5, seed=s, device=device).requires_grad_() for s in (12, 13))
        check_gradients(fam.compose, a, b)
        check_gradients(fam.inverse, a)


# ----------------------------------------------------------------------------------------
class TestTranslation:
    def test_smoke(self):
        assert isinstance(get_transform("translation"), Translation) and Translation().num_params == 2

    @pytest.mark.parametrize("align_corners", [False, True])
    def test_convention_matrix(self, align_corners):
        check_equals_affine_warp("translation", [0.3, -0.2], align_corners)

    @pytest.mark.parametrize("align_corners", [False, True])
    def test_convention_one_pixel(self, align_corners, device):
        # tx = one pixel: the output pixel j reads input pixel j + 1 (content moves left)
        h, w = 5, 8
        x = rand(1, 2, h, w, device=device)
        step_x = 2.0 / (w - 1) if align_corners else 2.0 / w
        step_y = 2.0 / (h - 1) if align_corners else 2.0 / h
        p = torch.tensor([[step_x, 0.0]], dtype=F64, device=device)
        out = warp(x, p, "translation", align_corners=align_corners)
        torch.testing.assert_close(out[..., :-1], x[..., 1:], atol=1e-9, rtol=0)
        p = torch.tensor([[0.0, -step_y]], dtype=F64, device=device)
        out = warp(x, p, "translation", align_corners=align_corners)
        torch.testing.assert_close(out[..., 1:, :], x[..., :-1, :], atol=1e-9, rtol=0)


class TestAttention:
    def test_smoke(self):
        assert isinstance(get_transform("attention"), Attention) and Attention().num_params == 3

    @pytest.mark.parametrize("align_corners", [False, True])
    def test_convention_matrix(self, align_corners):
        check_equals_affine_warp("attention", [0.8, 0.3, -0.2], align_corners)

    def test_convention_zoom_reads_a_window(self, device):
        # s = 1/2 centred at t: the output shows the input's window [t - 1/2, t + 1/2], magnified 2x
        x = rand(1, 1, 8, 8, device=device)
        p = torch.tensor([[0.5, -0.5, 0.5]], dtype=F64, device=device)  # the bottom-left quadrant
        out = warp(x, p, "attention", out_size=(4, 4))
        torch.testing.assert_close(out, x[..., 4:, :4], atol=1e-12, rtol=0)


class TestSimilarity:
    def test_smoke(self):
        assert isinstance(get_transform("similarity"), Similarity) and Similarity().num_params == 4

    @pytest.mark.parametrize("align_corners", [False, True])
    def test_convention_matrix(self, align_corners):
        check_equals_affine_warp("similarity", [0.8, 0.6, 0.3, -0.2], align_corners)

    @pytest.mark.parametrize("align_corners", [False, True])
    @pytest.mark.parametrize("n", [6, 7])
    def test_convention_quarter_turn_is_rot90(self, align_corners, n, device):
        # Output pixel (row i, col j) sits at p = (x_j, y_i) and reads the input at
        # R(pi/2) p = (cos*x - sin*y, sin*x + cos*y) = (-y_i, x_j): column n-1-i, row j.
        # So out[i, j] = in[j, n-1-i], which is torch.rot90(k=1, dims=(H, W)): with y down
        # a positive angle shows the content turned counter-clockwise on screen.
        x = rand(2, 3, n, n, device=device)
        for angle, k in [(math.pi / 2, 1), (-math.pi / 2, -1), (math.pi, 2)]:
            p = torch.tensor([[1.0, angle, 0.0, 0.0]], dtype=F64, device=device).expand(2, 4)
            out = warp(x, p, "similarity", align_corners=align_corners)
            torch.testing.assert_close(out, torch.rot90(x, k, dims=(-2, -1)), atol=1e-9, rtol=0)
        # the explicit index formula, in case rot90's direction were misremembered
        out = warp(x, torch.tensor([[1.0, math.pi / 2, 0, 0]] * 2, dtype=F64, device=device), "similarity")
        i, j = 1, 4
        torch.testing.assert_close(out[..., i, j], x[..., j, n - 1 - i], atol=1e-9, rtol=0)

    def test_bound_angle_within_pi(self):
        p = Similarity().bound(torch.tensor([[50.0, 50.0, -50.0, 0.0]]))
        torch.testing.assert_close(p, torch.tensor([[2.0, math.pi, -1.0, 0.0]]))


class TestAffine:
    def test_smoke(self):
        fam = get_transform("affine")
        assert isinstance(fam, Affine) and fam.num_params == 6
        theta = rand_params("affine", 2)
        assert torch.equal(fam.check_params(theta.view(2, 2, 3)), theta)  # affine_grid's (B, 2, 3)

    @pytest.mark.parametrize("dtype", [torch.float32, F64])
    def test_convention_grid_is_affine_grid(self, dtype, device):
        theta = rand_params("affine", 4, dtype=dtype, device=device)
        for ac in (False, True):
            ref = F.affine_grid(theta.view(4, 2, 3), [4, 1, 6, 10], align_corners=ac)
            ours = get_transform("affine").grid(theta, (6, 10), ac)
            torch.testing.assert_close(ours, ref, atol=4 * torch.finfo(dtype).eps, rtol=0)

    @pytest.mark.parametrize("align_corners", [False, True])
    def test_convention_scipy_map_coordinates(self, align_corners):
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


class TestProjective:
    def test_smoke(self):
        fam = get_transform("projective")
        assert isinstance(fam, Projective) and fam.num_params == 8 and not fam.is_affine

    @pytest.mark.parametrize("align_corners", [False, True])
    @pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
    def test_convention_zero_last_row_is_affine(self, align_corners, mode):
        theta = rand_params("affine", 3, strength=1.5)
        proj = torch.cat([theta, torch.zeros(3, 2, dtype=F64)], dim=1)
        x = torch.rand(3, 2, 9, 7, dtype=F64)
        for out_size in [(9, 7), (5, 12)]:
            kw = dict(out_size=out_size, mode=mode, align_corners=align_corners)
            torch.testing.assert_close(warp(x, proj, "projective", **kw), warp(x, theta, "affine", **kw))

    @pytest.mark.parametrize("align_corners", [False, True])
    def test_convention_opencv_across_the_horizon(self, align_corners):
        # w = 1 + 3x vanishes at x = -1/3 inside the image; left of it w < 0 and, as in
        # OpenCV, the division by a negative w still picks a point inside the image
        in_size = out_size = (21, 25)
        p = torch.tensor([[1.0, 0.0, 0.5, 0.0, 1.0, 0.0, 3.0, 0.0]], dtype=F64)
        m = to_pixel_matrix(get_transform("projective").matrix(p), in_size, out_size, align_corners)[0].numpy()
        img, ref, inside = opencv_case("projective", m, in_size, out_size, seed=6)
        xs = centres(out_size[1], align_corners)
        assert inside[:, xs < -1 / 3].sum() > 20  # the w < 0 side is really compared
        out = warp(torch.from_numpy(img)[None, None], p.float(), "projective", align_corners=align_corners)
        check_opencv(out[0, 0].numpy(), ref, inside)

    @pytest.mark.parametrize("align_corners", [False, True])
    def test_degenerate_points_at_infinity(self, align_corners):
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

    def test_guard_horizon_inside_the_square(self):
        # w = 1 - x / 0.375 vanishes on the pixel centres of column 5 of 8: guarded path, finite output
        p = torch.tensor([[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, -1 / 0.375, 0.0]], dtype=F64)
        grid = get_transform("projective").grid(p, (8, 8))
        assert torch.isfinite(grid).all() and grid.abs().max() <= GRID_LIMIT
        assert grid[0, :, 5].abs().max() == GRID_LIMIT  # the horizon itself reads the padding


# ----------------------------------------------------------------------------------------
class TestThinPlateSpline:
    def test_smoke(self, device, dtype):
        fam = ThinPlateSpline(grid_size=3)
        assert fam.num_params == 18 and fam.control_points.shape == (9, 2)
        p = fam.random(2, generator=torch.Generator().manual_seed(0), device=device, dtype=dtype)
        assert_on(fam.targets(p), (2, 9, 2), dtype, device)
        w, a = fam.coefficients(p)
        assert_on(w, (2, 9, 2), dtype, device)
        assert_on(a, (2, 3, 2), dtype, device)
        pts = rand(2, 5, 2, dtype=dtype, device=device)
        weights = fam.weights(pts)
        assert_on(weights, (2, 5, 9), dtype, device)
        torch.testing.assert_close(weights.sum(-1), torch.ones(2, 5, dtype=dtype, device=device))  # affine exact
        ident, gw = fam.grid_weights((4, 5), device=device, dtype=dtype)
        assert_on(ident, (20, 2), dtype, device)
        assert_on(gw, (20, 9), dtype, device)

    def test_exceptions(self):
        with pytest.raises(ValueError, match="grid_size must be an int >= 2, got 1"):
            get_transform("tps", grid_size=1)
        with pytest.raises(ValueError, match="reg must be a finite number >= 0, got -1"):
            get_transform("tps", reg=-1.0)

    @pytest.mark.parametrize("align_corners", [False, True])
    @pytest.mark.parametrize(("grid_size", "reg"), [(4, 0.0), (3, 0.0), (5, 0.0), (4, 0.5)])
    def test_convention_reproduces_affine(self, align_corners, grid_size, reg):
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

    @pytest.mark.parametrize(("grid_size", "reg"), [(4, 0.0), (3, 0.0), (5, 0.0), (4, 0.3)])
    def test_convention_scipy_thin_plate_rbf(self, grid_size, reg):
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

    def test_weight_gradients_are_the_derivative_of_weights(self):
        fam = ThinPlateSpline(grid_size=3)
        pts = rand(6, 2, seed=14) * 2.2 - 1.1
        wx, wy = fam.weight_gradients(pts)
        jac = torch.autograd.functional.jacobian(lambda q: fam.weights(q).sum(0), pts)  # (K, N, 2)
        torch.testing.assert_close(wx, jac[..., 0].T, atol=1e-10, rtol=0)
        torch.testing.assert_close(wy, jac[..., 1].T, atol=1e-10, rtol=0)

    # -- the cached grid weights ----------------------------------------------------------
    def test_cache_weights_computed_once(self, monkeypatch):
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

    def test_cache_returns_the_same_object(self):
        fam = get_transform("tps")
        a = fam.grid_weights((9, 5), device=torch.device("cpu"), dtype=torch.float32)
        b = fam.grid_weights((9, 5), device=torch.device("cpu"), dtype=torch.float32)
        assert a[0] is b[0] and a[1] is b[1]
        c = fam.grid_weights((9, 5), device=torch.device("cpu"), dtype=F64)
        assert c[1] is not a[1] and c[1].dtype == F64

    def test_cache_grid_equals_direct_spline(self):
        fam = get_transform("tps")
        p = rand_params("tps", 2, seed=11)
        for ac in (False, True):
            pts = ref_base_grid(5, 8, ac)[None].expand(2, -1, -1)
            torch.testing.assert_close(fam.grid(p, (5, 8), ac).view(2, -1, 2), fam.transform_points(p, pts))
