"""stnkit.geometry.families3d: the 3-D transform families, and warp / sample on volumes.

References never come from the code under test: torch's own affine_grid / grid_sample
(the oracle for the 3-D affine), scipy's Rotation (rotation vectors), the 2-D families
(a rotation about z is the 2-D similarity on every slice), and matrices written out
here from the documented parameterisations (output -> input, normalised, (x, y, z)
along (W, H, D)). Volumes are 4-8 voxels a side.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation
from torch.autograd import gradcheck

import stnkit
from stnkit.geometry import (
    GRID_LIMIT,
    TRANSFORMS_3D,
    Affine3D,
    MatrixFamily3D,
    base_grid_3d,
    get_transform,
    rotation_matrix,
    rotation_vector,
    sample,
    warp,
)

F64 = torch.float64
FAMILIES_3D = ["translation", "attention", "rigid", "similarity", "affine", "projective"]
AFFINE_3D = FAMILIES_3D[:-1]  # all but projective
SIZE = (4, 5, 6)  # (D, H, W)
PROPERTY = settings(deadline=None, max_examples=25)

pytestmark = pytest.mark.filterwarnings("ignore:Since version 1.3.0, affine_grid:UserWarning")


def esc(s: str) -> str:
    return re.escape(s)


def fam3(name: str):
    return get_transform(name, dims=3)


def rand_params(name: str, batch: int, strength: float = 1.0, seed: int = 0, dtype=F64) -> torch.Tensor:
    return fam3(name).random(batch, strength, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def scipy_rotation(r: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(Rotation.from_rotvec(r.detach().double().numpy()).as_matrix())


def documented_matrix(name: str, p: torch.Tensor) -> torch.Tensor:
    """(B, 4, 4) from the documented parameterisations (rotations by scipy)."""
    b = p.shape[0]
    m = torch.eye(4, dtype=F64).repeat(b, 1, 1)
    if name == "translation":
        m[:, :3, 3] = p
    elif name == "attention":
        m[:, :3, :3] = p[:, 0, None, None] * torch.eye(3, dtype=F64)
        m[:, :3, 3] = p[:, 1:]
    elif name == "rigid":
        m[:, :3, :3] = scipy_rotation(p[:, :3])
        m[:, :3, 3] = p[:, 3:]
    elif name == "similarity":
        m[:, :3, :3] = torch.exp(p[:, 0, None, None]) * scipy_rotation(p[:, 1:4])
        m[:, :3, 3] = p[:, 4:]
    elif name == "affine":
        m[:, :3] = p.view(b, 3, 4)
    elif name == "projective":
        m = torch.cat([p, torch.ones(b, 1, dtype=p.dtype)], 1).view(b, 4, 4)
    else:
        raise AssertionError(name)
    return m


def ref_points(size, align_corners):
    """(D*H*W, 3) voxel centres (x, y, z), depth outermost, from the documented formula."""

    def centres(n):
        j = np.arange(n, dtype=np.float64)
        if align_corners:
            return 2 * j / (n - 1) - 1 if n > 1 else np.zeros(1)
        return (2 * j + 1) / n - 1

    gz, gy, gx = np.meshgrid(*(centres(n) for n in size), indexing="ij")
    return torch.from_numpy(np.stack([gx.ravel(), gy.ravel(), gz.ravel()], -1))


def apply_homogeneous(m: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    hom = torch.cat([pts, torch.ones_like(pts[..., :1])], -1) @ m.transpose(1, 2)
    return hom[..., :3] / hom[..., 3:]


def rand(*shape, seed=0, dtype=F64):
    return torch.rand(shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))


def one_line_value_error(fn, pattern: str):
    with pytest.raises(ValueError, match=pattern) as info:
        fn()
    assert "\n" not in str(info.value)


# well-conditioned parameters near the identity, per family
def _params(name: str):
    small = st.floats(-0.3, 0.3)
    per_family = {
        "translation": [st.floats(-1.5, 1.5)] * 3,
        "attention": [st.floats(0.4, 2.0)] + [st.floats(-1, 1)] * 3,
        "rigid": [st.floats(-2.0, 2.0)] * 3 + [st.floats(-1, 1)] * 3,
        "similarity": [st.floats(-0.7, 0.7)] + [st.floats(-2.0, 2.0)] * 3 + [st.floats(-1, 1)] * 3,
        "affine": [small] * 12,
        "projective": [small] * 12 + [st.floats(-0.2, 0.2)] * 3,
    }[name]
    ident = fam3(name).identity(1, dtype=F64)[0]
    add = name in ("affine", "projective")
    return st.tuples(*per_family).map(lambda v: (torch.tensor(v, dtype=F64) + (ident if add else 0))[None])


# ----------------------------------------------------------------------------------------
class TestGetTransform3D:
    def test_smoke(self):
        assert list(TRANSFORMS_3D)[: len(FAMILIES_3D)] == FAMILIES_3D
        for name, n in zip(FAMILIES_3D, [3, 4, 6, 7, 12, 15]):
            fam = fam3(name)
            assert isinstance(fam, MatrixFamily3D) and fam.dims == 3 and fam.name == name and fam.num_params == n
            assert fam is fam3(name) and (name == "rigid" or fam is not get_transform(name))
        assert get_transform("affine").dims == 2 and get_transform("affine", dims=2).num_params == 6
        assert isinstance(fam3("affine"), Affine3D)

    def test_exceptions(self):
        one_line_value_error(lambda: get_transform("affine", dims=4), esc("dims must be 2 or 3, got 4"))
        one_line_value_error(
            lambda: get_transform("twirl", dims=3), esc("unknown transform 'twirl' in 3-D; valid names: translation")
        )
        one_line_value_error(lambda: get_transform("rigid"), esc("('rigid' is a 3-D family)"))
        one_line_value_error(
            lambda: get_transform(get_transform("affine"), dims=3), esc("is a 2-D family, but dims=3 was asked for")
        )


# ----------------------------------------------------------------------------------------
class TestFamilies3D:
    @pytest.mark.parametrize("name", FAMILIES_3D)
    @pytest.mark.parametrize("dtype", [torch.float32, F64])
    def test_smoke(self, name, dtype):
        fam = fam3(name)
        n = fam.num_params
        p = rand_params(name, 3, 0.5, dtype=dtype)
        assert p.shape == (3, n) and p.dtype == dtype
        assert fam.bound(p).shape == (3, n)
        assert fam.grid(p, SIZE).shape == (3, *SIZE, 3) and fam.grid(p, SIZE).dtype == dtype
        assert fam.grid(p, 4, align_corners=True).shape == (3, 4, 4, 4, 3)
        assert fam.transform_points(p, rand(3, 7, 3, dtype=dtype)).shape == (3, 7, 3)
        assert fam.matrix(p).shape == (3, 4, 4)
        assert fam.compose(p, p).shape == fam.inverse(p).shape == (3, n)

    @pytest.mark.parametrize("name", FAMILIES_3D)
    def test_identity_is_exact(self, name):
        fam = fam3(name)
        ident = fam.identity(2, dtype=F64)
        assert torch.equal(fam.matrix(ident), torch.eye(4, dtype=F64).expand(2, 4, 4))
        for ac in (False, True):
            ref = base_grid_3d(SIZE, ac, dtype=F64).expand(2, -1, -1, -1, -1)
            assert torch.equal(fam.grid(ident, SIZE, ac), ref)
            x = rand(2, 3, *SIZE)
            torch.testing.assert_close(warp(x, ident, name, align_corners=ac), x, atol=1e-12, rtol=0)
        assert torch.equal(fam.bound(torch.zeros_like(ident)), ident)
        assert torch.equal(fam.random(2, 0.0, dtype=F64), ident)
        p = fam.random(2, generator=torch.Generator().manual_seed(3), dtype=F64)
        assert torch.equal(p, fam.random(2, generator=torch.Generator().manual_seed(3), dtype=F64))
        assert not torch.equal(p, ident)

    @pytest.mark.parametrize("name", FAMILIES_3D)
    def test_bound_is_finite_and_near_identity(self, name):
        fam = fam3(name)
        raw = torch.tensor([[1e9] * fam.num_params, [-1e9] * fam.num_params], dtype=F64)
        out = fam.bound(raw)
        limit = math.pi if name in ("rigid", "similarity") else 1.0
        assert torch.isfinite(out).all() and (out - fam.identity(2, dtype=F64)).abs().max() <= limit

    @pytest.mark.parametrize("name", FAMILIES_3D)
    def test_convention_matrix_is_documented(self, name):
        p = rand_params(name, 4, seed=11)
        torch.testing.assert_close(fam3(name).matrix(p), documented_matrix(name, p), atol=1e-12, rtol=0)
        torch.testing.assert_close(fam3(name).from_matrix(documented_matrix(name, p)), p, atol=1e-10, rtol=0)

    @pytest.mark.parametrize("name", FAMILIES_3D)
    def test_convention_transform_points_is_the_matrix_product(self, name):
        p = rand_params(name, 3, seed=5)
        pts = rand(3, 11, 3, seed=6) * 2 - 1
        ref = apply_homogeneous(documented_matrix(name, p), pts)
        torch.testing.assert_close(fam3(name).transform_points(p, pts), ref, atol=1e-12, rtol=0)

    @pytest.mark.parametrize("name", FAMILIES_3D)
    @pytest.mark.parametrize("align_corners", [False, True])
    def test_convention_grid_is_transform_points_of_the_centres(self, name, align_corners):
        p = rand_params(name, 2, seed=7)
        pts = ref_points(SIZE, align_corners)[None].expand(2, -1, -1)
        grid = fam3(name).grid(p, SIZE, align_corners).view(2, -1, 3)
        torch.testing.assert_close(grid, apply_homogeneous(documented_matrix(name, p), pts), atol=1e-12, rtol=0)

    @pytest.mark.parametrize("name", AFFINE_3D)
    @pytest.mark.parametrize("align_corners", [False, True])
    def test_convention_grid_is_affine_grid_of_the_matrix(self, name, align_corners):
        # the oracle: torch's own F.affine_grid on the family's (B, 3, 4) matrix
        p = rand_params(name, 3, seed=8)
        theta = documented_matrix(name, p)[:, :3]
        ref = F.affine_grid(theta, [3, 1, *SIZE], align_corners=align_corners)
        torch.testing.assert_close(fam3(name).grid(p, SIZE, align_corners), ref, atol=1e-12, rtol=0)

    @pytest.mark.parametrize("name", FAMILIES_3D)
    def test_law_compose_applies_b_first_on_grids(self, name):
        # the 2-D order: grid(compose(a, b)) is b's grid mapped by a (so warp by a, then by b)
        fam = fam3(name)

        @PROPERTY
        @given(a=_params(name), b=_params(name), ac=st.booleans())
        def check(a, b, ac):
            chained = fam.transform_points(a, fam.grid(b, SIZE, ac).view(1, -1, 3)).view(1, *SIZE, 3)
            torch.testing.assert_close(fam.grid(fam.compose(a, b), SIZE, ac), chained, atol=1e-9, rtol=1e-9)
            prod = fam.matrix(a) @ fam.matrix(b)  # a homography is normalised to h44 = 1
            torch.testing.assert_close(fam.matrix(fam.compose(a, b)), prod / prod[:, 3:, 3:], atol=1e-9, rtol=0)

        check()

    @pytest.mark.parametrize("name", ["translation", "attention", "affine"])
    def test_law_compose_equals_sequential_warps(self, name):
        # warp by a, then by b == one warp by compose(a, b), on a volume whose channels are
        # affine in position (trilinear interpolation reproduces them exactly) inside the border
        fam = fam3(name)
        g = ref_points((8, 8, 8), False).view(8, 8, 8, 3)
        x = torch.stack([0.7 * g[..., 0] - 0.3 * g[..., 1] + 0.2 * g[..., 2], g[..., 2] - 0.5 * g[..., 0]])[None]
        ident = fam.identity(1, dtype=F64)
        a, b = (0.1 * rand_params(name, 1, 0.5, seed=s) + 0.9 * ident for s in (1, 2))
        seq = warp(warp(x, a, name), b, name)
        once = warp(x, fam.compose(a, b), name)
        torch.testing.assert_close(seq[..., 2:-2, 2:-2, 2:-2], once[..., 2:-2, 2:-2, 2:-2], atol=1e-9, rtol=0)

    @pytest.mark.parametrize("name", FAMILIES_3D)
    def test_law_compose_with_inverse_is_identity(self, name):
        fam = fam3(name)

        @PROPERTY
        @given(p=_params(name))
        def check(p):
            inv = fam.inverse(p)
            for q in (fam.compose(p, inv), fam.compose(inv, p)):
                torch.testing.assert_close(fam.matrix(q), torch.eye(4, dtype=F64)[None], atol=1e-5, rtol=0)
                torch.testing.assert_close(q, fam.identity(1, dtype=F64), atol=1e-5, rtol=0)

        check()

    @pytest.mark.parametrize("name", ["attention", "affine", "projective"])
    def test_exception_inverse_of_singular(self, name):
        with pytest.raises(ValueError, match="singular"):
            fam3(name).inverse(torch.zeros(1, fam3(name).num_params))

    @pytest.mark.parametrize("name", FAMILIES_3D)
    def test_gradcheck_grid(self, name):
        fam = fam3(name)
        p = rand_params(name, 2, 0.5, seed=9).requires_grad_()
        assert gradcheck(lambda p: fam.grid(p, (2, 3, 4), True), (p,))
        pts = (rand(2, 5, 3, seed=9) * 2 - 1).requires_grad_()
        assert gradcheck(fam.transform_points, (p, pts))

    @pytest.mark.parametrize("name", ["rigid", "similarity"])
    def test_gradcheck_at_and_near_the_identity(self, name):
        # the rotation's Taylor branch: finite, correct gradients at r = 0 and on both sides of the switch
        fam = fam3(name)
        for scale in (0.0, 1e-4, 5e-3, 1.5e-2):
            p = (
                fam.identity(1, dtype=F64)
                + scale * torch.tensor([[0.3, -0.5, 0.8, 0.1, 0.2, 0.3, 0.4][: fam.num_params]], dtype=F64)
            ).requires_grad_()
            assert gradcheck(lambda p: fam.grid(p, (2, 2, 3)), (p,))
            fam.grid(p, (2, 2, 3)).sum().backward()
            assert torch.isfinite(p.grad).all()

    @pytest.mark.parametrize("name", FAMILIES_3D)
    def test_gradcheck_compose_and_inverse(self, name):
        fam = fam3(name)
        a, b = (rand_params(name, 2, 0.5, seed=s).requires_grad_() for s in (12, 13))
        assert gradcheck(fam.compose, (a, b))
        assert gradcheck(fam.inverse, (a,))

    @pytest.mark.parametrize("name", FAMILIES_3D)
    def test_degenerate_huge_params_give_a_finite_warp(self, name):
        fam = fam3(name)
        x = rand(2, 1, 4, 4, 4, dtype=torch.float32)

        @PROPERTY
        @given(
            values=st.lists(
                st.one_of(st.floats(-3, 3), st.floats(width=32, allow_nan=False, allow_infinity=False)),
                min_size=2 * fam.num_params,
                max_size=2 * fam.num_params,
            ),
            dtype=st.sampled_from([torch.float32, F64]),
        )
        def check(values, dtype):
            p = torch.tensor(values, dtype=dtype).view(2, -1)
            out = warp(x.to(dtype), p, name)
            assert torch.isfinite(out).all()
            assert fam.grid(p, 4).abs().max() <= GRID_LIMIT

        check()


# ----------------------------------------------------------------------------------------
class TestProjective3D:
    def test_zero_perspective_is_the_affine(self):
        p = rand_params("projective", 2, seed=3)
        p[:, 12:] = 0
        for ac in (False, True):
            torch.testing.assert_close(
                fam3("projective").grid(p, SIZE, ac), fam3("affine").grid(p[:, :12], SIZE, ac), atol=1e-15, rtol=0
            )

    @pytest.mark.parametrize("align_corners", [False, True])
    def test_degenerate_points_at_infinity(self, align_corners):
        # w = 1 - 2 x vanishes on the plane x = 1/2 inside the cube: the grid stays finite, the
        # points near it read the padding, and the rest is the homogeneous division
        p = fam3("projective").identity(1, dtype=F64)
        p[0, 12] = -2.0
        grid = fam3("projective").grid(p, (4, 4, 8), align_corners)
        assert torch.isfinite(grid).all() and grid.abs().max() <= GRID_LIMIT
        pts = ref_points((4, 4, 8), align_corners)[None]
        ref = apply_homogeneous(documented_matrix("projective", p), pts).clamp(-GRID_LIMIT, GRID_LIMIT)
        torch.testing.assert_close(grid.view(1, -1, 3), ref, atol=1e-9, rtol=1e-9)
        out = warp(rand(1, 1, 4, 4, 8), p, "projective", align_corners=align_corners)
        assert torch.isfinite(out).all()

    @given(strength=st.floats(0.0, 40.0), seed=st.integers(0, 2**16))
    @settings(max_examples=25, deadline=None)
    def test_guard_only_when_needed(self, strength, seed):
        # the grid skips the guard when the parameters prove it idle; the result must not change
        p = rand_params("projective", 3, strength=strength, seed=seed)
        pts = ref_points(SIZE, False)[None].expand(3, -1, -1)
        m = documented_matrix("projective", p)
        q = pts @ m[:, :3, :3].transpose(1, 2) + m[:, None, :3, 3]
        w = pts @ m[:, 3:, :3].transpose(1, 2) + m[:, None, 3:, 3]
        w = torch.where(w.abs() < 1e-8, torch.where(w < 0, -1e-8, 1e-8), w)
        ref = torch.nan_to_num(q / w, nan=GRID_LIMIT, posinf=GRID_LIMIT, neginf=-GRID_LIMIT).clamp(
            -GRID_LIMIT, GRID_LIMIT
        )
        grid = fam3("projective").grid(p, SIZE).view(3, -1, 3)
        torch.testing.assert_close(grid, ref, atol=1e-9 * max(1.0, strength), rtol=1e-9)


# ----------------------------------------------------------------------------------------
class TestRotation:
    @staticmethod
    def vectors():
        gen = torch.Generator().manual_seed(0)
        axes = torch.randn(40, 3, dtype=F64, generator=gen)
        axes = axes / axes.norm(dim=1, keepdim=True)
        angles = torch.tensor(
            [0.0, 1e-12, 1e-8, 1e-5, 1e-3, 9.9e-3, 1.01e-2, 0.3, 1.0, 2.0, 3.0, math.pi - 1e-6, math.pi, math.pi + 1e-6]
            + [math.pi - 1e-3, 4.0, 10.0, 100.0] * 2
            + list(torch.rand(8, generator=gen, dtype=F64) * 2 * math.pi),
            dtype=F64,
        )
        return axes[: len(angles)] * angles[:, None]

    def test_orthonormal_with_det_one(self):
        for dtype, tol in ((F64, 1e-12), (torch.float32, 2e-6)):
            r = rotation_matrix(self.vectors().to(dtype))
            eye = torch.eye(3, dtype=dtype).expand_as(r)
            torch.testing.assert_close(r @ r.transpose(1, 2), eye, atol=tol, rtol=0)
            torch.testing.assert_close(torch.linalg.det(r), torch.ones(r.shape[0], dtype=dtype), atol=tol, rtol=0)

    def test_equals_scipy(self):
        v = self.vectors()
        torch.testing.assert_close(rotation_matrix(v), scipy_rotation(v), atol=1e-12, rtol=0)

    def test_rotation_vector_round_trip(self):
        # near and at pi too: the recovered vector may flip sign there, the rotation may not
        v = self.vectors()
        r = rotation_matrix(v)
        back = rotation_vector(r)
        torch.testing.assert_close(rotation_matrix(back), r, atol=1e-9, rtol=0)
        assert (back.norm(dim=1) <= math.pi + 1e-9).all()
        small = v.norm(dim=1) < 3.0
        torch.testing.assert_close(back[small], v[small], atol=1e-9, rtol=0)

    def test_rotation_about_z_is_the_2d_similarity_on_every_slice(self):
        a, tx, ty, tz = 0.7, 0.1, -0.2, 0.3
        g3 = fam3("rigid").grid(torch.tensor([[0.0, 0.0, a, tx, ty, tz]], dtype=F64), SIZE)
        g2 = get_transform("similarity").grid(torch.tensor([[1.0, a, tx, ty]], dtype=F64), SIZE[1:])
        torch.testing.assert_close(g3[..., :2], g2.expand(SIZE[0], -1, -1, -1)[None], atol=1e-12, rtol=0)
        torch.testing.assert_close(g3[..., 2], base_grid_3d(SIZE, dtype=F64)[None, ..., 2] + tz, atol=1e-12, rtol=0)


# ----------------------------------------------------------------------------------------
class TestWarpVolumes:
    @pytest.mark.parametrize("mode", ["bilinear", "nearest"])
    @pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
    @pytest.mark.parametrize("align_corners", [False, True])
    def test_affine_is_affine_grid_and_grid_sample(self, mode, padding_mode, align_corners):
        x = rand(2, 3, *SIZE)
        theta = rand_params("affine", 2, seed=4).view(2, 3, 4)
        ref = F.grid_sample(
            x,
            F.affine_grid(theta, [2, 3, 5, 4, 6], align_corners=align_corners),
            mode=mode,
            padding_mode=padding_mode,
            align_corners=align_corners,
        )
        for p in (theta, theta.reshape(2, 12)):
            out = warp(
                x, p, "affine", out_size=(5, 4, 6), mode=mode, padding_mode=padding_mode, align_corners=align_corners
            )
            torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)
        assert stnkit.warp(x, theta).shape == (2, 3, *SIZE)  # the default family is affine

    def test_out_size(self):
        x = rand(1, 2, *SIZE)
        p = fam3("rigid").identity(1, dtype=F64)
        assert warp(x, p, "rigid", out_size=3).shape == (1, 2, 3, 3, 3)
        assert warp(x, p, fam3("rigid"), out_size=(2, 7, 5)).shape == (1, 2, 2, 7, 5)

    def test_convention_one_voxel_along_depth(self):
        col = torch.arange(4.0, dtype=F64).view(1, 1, 4, 1, 1)
        out = warp(col, torch.tensor([[0.0, 0.0, 0.5]], dtype=F64), "translation", mode="nearest")
        assert out.flatten().tolist() == [1.0, 2.0, 3.0, 0.0]

    def test_low_precision_follows_the_input(self):
        x = rand(1, 2, *SIZE, dtype=torch.float32)
        p = rand_params("affine", 1, 0.3, dtype=torch.float32)
        for dtype in (torch.float16, torch.bfloat16):
            out = warp(x.to(dtype), p.to(dtype), "affine")
            assert out.dtype == dtype and torch.isfinite(out).all()

    def test_gradcheck_warp(self):
        x = rand(1, 2, 3, 4, 4).requires_grad_()
        p = rand_params("similarity", 1, 0.3, seed=2).requires_grad_()
        assert gradcheck(lambda x, p: warp(x, p, "similarity", padding_mode="border"), (x, p))

    def test_exceptions(self):
        x = rand(2, 1, *SIZE)
        one_line_value_error(
            lambda: warp(x, torch.zeros(2, 6)),
            esc("params for the 3-D transform 'affine' must have shape (B, 12) or (B, 3, 4), got shape (2, 6); ")
            + ".*2-D 'affine'",
        )
        one_line_value_error(
            lambda: warp(x, torch.zeros(2, 2, 3)), esc("got shape (2, 2, 3); that is the shape of the 2-D 'affine'")
        )
        one_line_value_error(
            lambda: warp(rand(2, 1, 5, 6), torch.zeros(2, 12)),
            esc("params for transform 'affine' must have shape (B, 6), got shape (2, 12); ") + ".*3-D 'affine'",
        )
        one_line_value_error(
            lambda: warp(x, torch.zeros(2, 4), "similarity"),
            esc("params for the 3-D transform 'similarity' must have shape (B, 7), got shape (2, 4); ")
            + ".*2-D 'similarity'",
        )
        one_line_value_error(
            lambda: warp(x, torch.zeros(2, 5), "rigid"), esc("must have shape (B, 6), got shape (2, 5)")
        )
        one_line_value_error(
            lambda: warp(x, get_transform("affine").identity(2), get_transform("affine")),
            esc("is 2-D, but x of shape (2, 1, 4, 5, 6) is a (B, C, D, H, W) volume"),
        )
        one_line_value_error(
            lambda: warp(rand(2, 1, 5, 6), fam3("affine").identity(2), fam3("affine")),
            esc("is 3-D, but x of shape (2, 1, 5, 6) is a (B, C, H, W) image"),
        )
        one_line_value_error(
            lambda: warp(x, fam3("affine").identity(2), "tps"),
            esc("params for the 3-D transform 'tps' (grid_size=4) must have shape (B, 192), got shape (2, 12)"),
        )
        one_line_value_error(
            lambda: warp(x, fam3("affine").identity(2), mode="bicubic"),
            esc("mode 'bicubic' is 2-D only") + ".*stnkit.geometry.sample_cubic",
        )
        one_line_value_error(lambda: warp(x, fam3("affine").identity(3)), esc("same batch size as x (2), got 3"))
        one_line_value_error(
            lambda: warp(x, fam3("affine").identity(2), out_size=(4, 0, 4)), "out_size must be positive"
        )
        with pytest.raises(TypeError, match=esc("out_size must be an int or a triple (D, H, W) of ints, got (4, 4)")):
            warp(x, fam3("affine").identity(2), out_size=(4, 4))
        one_line_value_error(
            lambda: warp(rand(2, 1, 1, 1, 2, 3), fam3("affine").identity(2)),
            esc("x must have shape (B, C, H, W) or (B, C, D, H, W), got shape (2, 1, 1, 1, 2, 3)"),
        )
        one_line_value_error(lambda: warp(rand(2, 1, 0, 2, 3), fam3("affine").identity(2)), "x must be non-empty")

    def test_exceptions_families(self):
        fam = fam3("affine")
        one_line_value_error(
            lambda: fam.transform_points(fam.identity(1), torch.zeros(1, 4, 2)),
            esc("points must have shape (B, N, 3) with x, y, z in that order, got shape (1, 4, 2)"),
        )
        one_line_value_error(
            lambda: fam.transform_points(fam.identity(2), torch.zeros(3, 4, 3)),
            esc("points must have the same batch size as params (2), got 3"),
        )
        one_line_value_error(
            lambda: fam.from_matrix(torch.zeros(1, 3, 3)), esc("m must have shape (B, 4, 4), got shape (1, 3, 3)")
        )
        one_line_value_error(lambda: fam.grid(torch.full((1, 12), math.nan), 4), "params must be finite")
        one_line_value_error(lambda: fam.grid(torch.zeros(0, 12), 4), esc("params must have a non-empty batch"))
        one_line_value_error(
            lambda: fam3("rigid").compose(fam3("rigid").identity(1), torch.zeros(1, 7)),
            esc("b for the 3-D transform 'rigid' must have shape (B, 6), got shape (1, 7)"),
        )


class TestSampleVolumes:
    def test_is_grid_sample(self):
        x = rand(2, 2, *SIZE)
        grid = rand(2, 3, 4, 5, 3, seed=1) * 2.4 - 1.2
        for mode in ("bilinear", "nearest"):
            for pad in ("zeros", "border", "reflection"):
                for ac in (False, True):
                    ref = F.grid_sample(x, grid, mode=mode, padding_mode=pad, align_corners=ac)
                    assert torch.equal(sample(x, grid, mode, pad, ac), ref)

    def test_exceptions(self):
        x = rand(2, 2, *SIZE)
        one_line_value_error(
            lambda: sample(x, torch.zeros(2, 3, 3, 2)),
            esc("grid must have shape (2, D_out, H_out, W_out, 3), got (2, 3, 3, 2)"),
        )
        one_line_value_error(
            lambda: sample(x, torch.zeros(2, 3, 3, 3, 2)),
            esc("grid must have shape (2, D_out, H_out, W_out, 3), got (2, 3, 3, 3, 2)"),
        )
        one_line_value_error(
            lambda: sample(x[:, :, 0], torch.zeros(2, 3, 3, 3, 3)),
            esc("grid must have shape (2, H_out, W_out, 2), got (2, 3, 3, 3, 3)"),
        )
        one_line_value_error(
            lambda: sample(x, torch.zeros(2, 3, 3, 3, 3), mode="bicubic"), esc("mode 'bicubic' is 2-D only")
        )
