"""stnkit.geometry's solvers and predicates: the homography from four point pairs, the convexity
of a quadrilateral, the thin-plate spline's inverse (Newton), its Jacobian determinant and fold check.

One group per public function, each with the same checks: agreement with an independent
reference written here (a numpy SVD solve of the DLT, a brute-force point-on-the-left test,
torch.autograd and finite differences of the forward map, the exact affine inverse), laws,
float64 gradcheck where the function is differentiable, dtype/device, and exceptions with
one-line messages that name the argument.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.autograd import gradcheck

from stnkit.geometry import Projective, ThinPlateSpline, base_grid, get_transform, quad_is_convex, warp

F64 = torch.float64
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
DTYPES = [torch.float32, F64]
SQUARE = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]], dtype=F64)  # TL, TR, BR, BL
PX = 2.0 / 28  # one pixel of a 28x28 frame, normalised


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


# -- Projective.from_points ------------------------------------------------------------------------
def _dlt_reference(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The homography H with dst ~ H src, from the null space of the 8x9 DLT matrix (numpy SVD), h33 = 1."""
    rows = []
    for (x, y), (u, v) in zip(src, dst):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y, -u])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y, -v])
    _, _, vt = np.linalg.svd(np.asarray(rows, dtype=np.float64))
    h = vt[-1]
    return (h / h[-1])[:8]


def _moved_corners(n: int, std: float, seed: int) -> torch.Tensor:
    return SQUARE + torch.randn(n, 4, 2, dtype=F64, generator=_gen(seed)) * std


def test_from_points_matches_numpy_dlt():
    src = _moved_corners(20, 0.15, 0)
    dst = _moved_corners(20, 0.25, 1)
    h = Projective.from_points(src, dst)
    ref = np.stack([_dlt_reference(s, d) for s, d in zip(src.numpy(), dst.numpy())])
    np.testing.assert_allclose(h.numpy(), ref, atol=1e-9)


def test_from_points_maps_src_onto_dst():
    src = SQUARE.expand(3, -1, -1)
    dst = src + torch.randn(3, 4, 2, dtype=F64, generator=_gen(0)) * 0.2
    h = Projective.from_points(src, dst)
    assert torch.allclose(get_transform("projective").transform_points(h, src), dst, atol=1e-10)
    # also callable on the instance that get_transform returns
    assert torch.equal(get_transform("projective").from_points(src, dst), h)


def test_from_points_identity_and_affine():
    src = _moved_corners(4, 0.1, 2)
    assert torch.allclose(Projective.from_points(src, src), Projective().identity(4, dtype=F64), atol=1e-12)
    theta = torch.tensor([[0.8, -0.3, 0.1], [0.2, 1.1, -0.2]], dtype=F64)
    dst = src @ theta[:, :2].T + theta[:, 2]
    expected = torch.cat([theta.reshape(6), torch.zeros(2, dtype=F64)]).expand(4, -1)
    assert torch.allclose(Projective.from_points(src, dst), expected, atol=1e-12)


@settings(deadline=None, max_examples=25)
@given(seed=st.integers(0, 2**16), std=st.floats(0.0, 0.2))
def test_from_points_swapped_is_the_inverse(seed, std):
    src, dst = _moved_corners(2, std, seed), _moved_corners(2, std, seed + 1)
    fam = Projective()
    forward, backward = Projective.from_points(src, dst), Projective.from_points(dst, src)
    assert torch.allclose(fam.inverse(forward), backward, atol=1e-8)


def test_from_points_warp_moves_dst_content_to_src():
    # T maps src -> dst, a shift by +0.25 in x: the output at p reads the input at p + (0.25, 0)
    src = torch.tensor([[[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]]], dtype=F64)
    dst = src + torch.tensor([0.25, 0.0], dtype=F64)
    x = torch.zeros(1, 1, 8, 8, dtype=F64)
    x[0, 0, 2, 5] = 1.0  # centre x = 11 / 8 - 1 = 0.375 (column 5 of 8)
    out = warp(x, Projective.from_points(src, dst), "projective")
    assert out[0, 0, 2, 4] > 0.99  # lands at 0.375 - 0.25 = 0.125: column 4
    assert out.sum() < 1.0 + 1e-6


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_from_points_dtype_and_device(device, dtype):
    src = _moved_corners(3, 0.1, 3).to(device, dtype)
    dst = _moved_corners(3, 0.1, 4).to(device, dtype)
    h = Projective.from_points(src, dst)
    assert h.shape == (3, 8) and h.dtype == dtype and h.device.type == device
    mixed = Projective.from_points(src.float(), dst.double())
    assert mixed.dtype == F64


def test_from_points_gradcheck():
    src = _moved_corners(2, 0.1, 5).requires_grad_()
    dst = _moved_corners(2, 0.1, 6).requires_grad_()
    assert gradcheck(Projective.from_points, (src, dst))


@pytest.mark.parametrize(
    "src, dst, exc, match",
    [
        ([[0.0, 1.0]], SQUARE[None], TypeError, "src must be a torch.Tensor"),
        (SQUARE[None], SQUARE[None].long(), TypeError, "dst must have a floating dtype"),
        (SQUARE[None, :3], SQUARE[None, :3], ValueError, r"src must have shape \(B, 4, 2\)"),
        (SQUARE, SQUARE, ValueError, r"src must have shape \(B, N, 2\)"),
        (SQUARE[None], SQUARE.expand(2, -1, -1), ValueError, r"dst must have the shape of src \(1, 4, 2\)"),
        (SQUARE[None] * float("nan"), SQUARE[None], ValueError, "src must be finite"),
        (
            torch.tensor([[[-1.0, -1.0], [0.0, 0.0], [1.0, 1.0], [-1.0, 1.0]]]),
            SQUARE[None],
            ValueError,
            "src and dst must be four points with no three collinear",
        ),
    ],
)
def test_from_points_exceptions(src, dst, exc, match):
    with pytest.raises(exc, match=match) as err:
        Projective.from_points(src, dst)
    _one_line(err)


# -- quad_is_convex ----------------------------------------------------------------------------------
def _convex_reference(quad: np.ndarray) -> bool:
    """Brute force: every corner not on an edge lies strictly to the left of that edge (y down: cross > 0)."""
    for k in range(4):
        a, b = quad[k], quad[(k + 1) % 4]
        for j in range(4):
            if j in (k, (k + 1) % 4):
                continue
            p = quad[j]
            if (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0]) <= 0:
                return False
    return True


@pytest.mark.parametrize("std", [0.3, 0.8, 2.0])
def test_quad_is_convex_matches_brute_force(std):
    quads = _moved_corners(3000, std, 7)
    got = quad_is_convex(quads)
    ref = torch.tensor([_convex_reference(q) for q in quads.numpy()])
    assert torch.equal(got, ref)
    assert 0 < int(ref.sum()) < len(ref) or std < 0.5  # both outcomes occur where the noise is large


def test_quad_is_convex_named_cases():
    dented = SQUARE.clone()
    dented[2] = torch.tensor([-0.5, -0.8])  # bottom-right corner pushed inside
    bowtie = SQUARE[[0, 1, 3, 2]]  # crossing edges
    collinear = torch.tensor([[-1.0, -1.0], [0.0, -1.0], [1.0, -1.0], [0.0, 1.0]], dtype=F64)  # a triangle
    mirrored = SQUARE.flip(0)  # the other orientation
    rotated = SQUARE.roll(1, dims=0)  # same polygon, another starting corner
    quads = torch.stack([SQUARE, dented, bowtie, collinear, mirrored, rotated, SQUARE * float("nan")])
    assert quad_is_convex(quads).tolist() == [True, False, False, False, False, True, False]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_quad_is_convex_dtype_and_device(device, dtype):
    out = quad_is_convex(SQUARE.expand(2, -1, -1).to(device, dtype))
    assert out.dtype == torch.bool and out.shape == (2,) and out.device.type == device and out.all()


@pytest.mark.parametrize(
    "quad, exc, match",
    [
        (SQUARE.numpy(), TypeError, "quad must be a torch.Tensor"),
        (SQUARE.long()[None], TypeError, "quad must have a floating dtype"),
        (SQUARE, ValueError, r"quad must have shape \(B, N, 2\)"),
        (SQUARE[None, :3], ValueError, r"quad must have shape \(B, 4, 2\)"),
    ],
)
def test_quad_is_convex_exceptions(quad, exc, match):
    with pytest.raises(exc, match=match) as err:
        quad_is_convex(quad)
    _one_line(err)


# -- ThinPlateSpline: helpers -----------------------------------------------------------------------
def _elastic_params(fam: ThinPlateSpline, n: int, seed: int, std_px: float = 1.5) -> torch.Tensor:
    """Control points moved by N(0, std_px) pixels of a 28x28 frame, then a shrink s ~ U[0.75, 1]."""
    g = _gen(seed)
    c = fam.control_points.to(F64)
    s = 0.75 + 0.25 * torch.rand(n, 1, 1, dtype=F64, generator=g)
    noise = torch.randn(n, c.shape[0], 2, dtype=F64, generator=g) * std_px * PX
    return ((c + noise) / s - c).reshape(n, -1)


def _affine_spline(fam: ThinPlateSpline, theta: torch.Tensor) -> torch.Tensor:
    """Offsets that make the spline the affine map ``theta (B, 2, 3)`` (splines reproduce affine maps)."""
    c = fam.control_points.to(theta.dtype)
    return (c @ theta[:, :, :2].transpose(1, 2) + theta[:, None, :, 2] - c).reshape(theta.shape[0], -1)


THETA = torch.tensor([[[0.9, -0.2, 0.1], [0.15, 1.1, -0.05]], [[1.2, 0.0, 0.0], [0.0, 0.8, 0.2]]], dtype=F64)


# -- ThinPlateSpline.inverse_grid --------------------------------------------------------------------
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("size", [(28, 28), (9, 13)])
def test_inverse_grid_forward_of_inverse_is_identity(size, align_corners):
    fam = ThinPlateSpline(4)
    p = _elastic_params(fam, 50, 0)
    assert not fam.folds(p, size, align_corners).any()
    u = fam.inverse_grid(p, size, align_corners)
    assert u.shape == (50, *size, 2) and u.dtype == F64
    v = base_grid(size, align_corners, dtype=F64).expand(50, -1, -1, -1)
    residual = fam.transform_points(p, u.reshape(50, -1, 2)) - v.reshape(50, -1, 2)
    assert residual.abs().max() < 1e-6
    # the control: one Newton step is not enough, so the iterations matter
    one = fam.inverse_grid(p, size, align_corners, iters=1).reshape(50, -1, 2)
    assert (fam.transform_points(p, one) - v.reshape(50, -1, 2)).abs().max() > 1e-6


def test_inverse_grid_of_an_affine_spline_is_the_affine_inverse():
    fam = ThinPlateSpline(3)
    affine = get_transform("affine")
    u = fam.inverse_grid(_affine_spline(fam, THETA), (7, 5))
    expected = affine.grid(affine.inverse(THETA.reshape(2, 6)), (7, 5))
    assert torch.allclose(u, expected, atol=1e-10)
    assert torch.allclose(fam.inverse_grid(fam.identity(2, dtype=F64), (7, 5)), base_grid((7, 5), dtype=F64))


def test_inverse_grid_undoes_the_warp():
    fam = ThinPlateSpline(4)
    p = _elastic_params(fam, 4, 1)
    centre = torch.tensor([0.1, -0.1], dtype=F64)
    x = torch.exp(-(base_grid(28, dtype=F64) - centre).pow(2).sum(-1) / 0.2).expand(4, 1, 28, 28)  # a smooth blob
    warped = warp(x, p, fam)
    back = torch.nn.functional.grid_sample(warped, fam.inverse_grid(p, 28), align_corners=False)
    assert (back - x).abs().max() < 0.05  # the blur of resampling twice only
    # the controls: the warp did move the blob, and another sample's inverse does not undo it
    assert (warped - x).abs().max() > 0.3
    wrong = torch.nn.functional.grid_sample(warped, fam.inverse_grid(p.roll(1, 0), 28), align_corners=False)
    assert (wrong - x).abs().max() > 0.3


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_inverse_grid_dtype_and_device(device, dtype):
    fam = ThinPlateSpline(4)
    p = _elastic_params(fam, 300, 2)  # more than one chunk of 256
    u = fam.inverse_grid(p.to(device, dtype), (6, 5))
    assert u.dtype == dtype and u.device.type == device and u.shape == (300, 6, 5, 2)
    ref = fam.inverse_grid(p, (6, 5))
    assert torch.allclose(u.cpu().double(), ref, atol=1e-5)
    assert torch.equal(torch.cat([fam.inverse_grid(q, (6, 5)) for q in p.split(100)]), ref)


def test_inverse_grid_gradcheck():
    fam = ThinPlateSpline(3)
    p = (0.05 * torch.randn(2, 18, dtype=F64, generator=_gen(3))).requires_grad_()
    assert gradcheck(lambda q: fam.inverse_grid(q, (3, 4)), (p,))


@pytest.mark.parametrize(
    "params, kwargs, exc, match",
    [
        (torch.zeros(2, 30), {}, ValueError, r"params for transform 'tps' must have shape \(B, 32\)"),
        (torch.zeros(2, 32, dtype=torch.long), {}, TypeError, "params must have a floating dtype"),
        (torch.full((1, 32), float("nan")), {}, ValueError, "params must be finite"),
        (torch.zeros(1, 32), {"out_size": 0}, ValueError, "out_size must be positive"),
        (torch.zeros(1, 32), {"out_size": "28"}, TypeError, "out_size must be an int or a pair"),
        (torch.zeros(1, 32), {"iters": 0}, ValueError, "iters must be a positive int"),
        (torch.zeros(1, 32), {"iters": True}, TypeError, "iters must be an int"),
    ],
)
def test_inverse_grid_exceptions(params, kwargs, exc, match):
    kwargs = {"out_size": 5, **kwargs}
    with pytest.raises(exc, match=match) as err:
        ThinPlateSpline(4).inverse_grid(params, **kwargs)
    _one_line(err)


# -- ThinPlateSpline.jacobian_det --------------------------------------------------------------------
def _autograd_det(fam: ThinPlateSpline, params: torch.Tensor, size, align_corners: bool) -> torch.Tensor:
    """det dT/du at the pixel centres by torch.autograd through transform_points (each point moves alone)."""
    n = params.shape[0]
    u = base_grid(size, align_corners, dtype=F64).reshape(1, -1, 2).expand(n, -1, -1).clone().requires_grad_()
    t = fam.transform_points(params, u)
    jx_of_t = torch.autograd.grad(t[..., 0].sum(), u, retain_graph=True)[0]  # (dTx/dx, dTx/dy)
    jy_of_t = torch.autograd.grad(t[..., 1].sum(), u)[0]  # (dTy/dx, dTy/dy)
    det = jx_of_t[..., 0] * jy_of_t[..., 1] - jx_of_t[..., 1] * jy_of_t[..., 0]
    return det.view(n, *size)


@pytest.mark.parametrize("align_corners", [False, True])
def test_jacobian_det_matches_autograd(align_corners):
    fam = ThinPlateSpline(4)
    p = fam.random(6, strength=2.0, generator=_gen(4), dtype=F64)
    det = fam.jacobian_det(p, (7, 9), align_corners)
    assert det.shape == (6, 7, 9)
    assert torch.allclose(det, _autograd_det(fam, p, (7, 9), align_corners), atol=1e-9)


def test_jacobian_det_of_an_affine_spline_is_constant():
    fam = ThinPlateSpline(4)
    det = fam.jacobian_det(_affine_spline(fam, THETA), 5)
    expected = torch.linalg.det(THETA[:, :, :2])[:, None, None].expand(-1, 5, 5)
    assert torch.allclose(det, expected, atol=1e-10)
    assert torch.allclose(fam.jacobian_det(fam.identity(1, dtype=F64), 5), torch.ones(1, 5, 5, dtype=F64))


def test_tps_derivatives_match_finite_differences():
    fam = get_transform("tps")
    p = fam.random(4, generator=_gen(1)).double()
    pts = torch.rand(4, 50, 2, dtype=F64, generator=_gen(2)) * 2.4 - 1.2
    tgt = fam.targets(p)
    t = fam.transform_points(p, pts)
    wx, wy = fam.weight_gradients(pts)
    h = 1e-6
    for step, w in (([h, 0.0], wx), ([0.0, h], wy)):
        fd = (fam.transform_points(p, pts + torch.tensor(step, dtype=F64)) - t) / h
        assert torch.allclose(w @ tgt, fd, atol=1e-4)
    # the coefficients describe the same spline
    w, a = fam.coefficients(p)
    r2 = (pts.unsqueeze(-2) - fam.control_points.double()).pow(2).sum(-1)
    direct = (r2 * torch.log(r2.clamp_min(1e-300))) @ w + a[:, :1] + pts @ a[:, 1:]
    assert torch.allclose(direct, t, atol=1e-10)


def test_jacobian_det_cache_is_keyed_by_size_frame_and_dtype():
    fam = ThinPlateSpline(4)
    p = fam.random(3, strength=2.0, generator=_gen(5), dtype=F64)
    for size, ac in (((5, 5), False), ((5, 5), True), ((6, 4), False), ((5, 5), False)):
        assert torch.allclose(fam.jacobian_det(p, size, ac), _autograd_det(fam, p, size, ac), atol=1e-9)
    d32 = fam.jacobian_det(p.float(), (5, 5))
    assert d32.dtype == torch.float32
    assert torch.allclose(d32.double(), fam.jacobian_det(p, (5, 5)), atol=1e-4)
    assert fam.jacobian_det(p, (5, 5)).dtype == F64  # the float32 entry did not replace the float64 one


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_jacobian_det_dtype_and_device(device, dtype):
    fam = ThinPlateSpline(3)
    p = fam.random(2, generator=_gen(6), dtype=F64)
    det = fam.jacobian_det(p.to(device, dtype), (4, 3))
    assert det.dtype == dtype and det.device.type == device and det.shape == (2, 4, 3)
    assert torch.allclose(det.cpu().double(), fam.jacobian_det(p, (4, 3)), atol=1e-5)


def test_jacobian_det_gradcheck():
    fam = ThinPlateSpline(3)
    p = fam.random(2, generator=_gen(7), dtype=F64).requires_grad_()
    assert gradcheck(lambda q: fam.jacobian_det(q, (3, 4)), (p,))


@pytest.mark.parametrize(
    "params, size, exc, match",
    [
        (torch.zeros(2, 8), 5, ValueError, r"params for transform 'tps' must have shape \(B, 32\)"),
        ([0.0] * 32, 5, TypeError, "params must be a torch.Tensor"),
        (torch.zeros(1, 32), (5, -1), ValueError, "out_size must be positive"),
        (torch.zeros(1, 32), 2.5, TypeError, "out_size must be an int or a pair"),
    ],
)
def test_jacobian_det_and_folds_exceptions(params, size, exc, match):
    for fn in (ThinPlateSpline(4).jacobian_det, ThinPlateSpline(4).folds):
        with pytest.raises(exc, match=match) as err:
            fn(params, size)
        _one_line(err)


# -- ThinPlateSpline.folds ---------------------------------------------------------------------------
def test_folds_catches_a_fold():
    fam = get_transform("tps")
    p = torch.zeros(2, 32, dtype=F64)
    p[1, 2 * 5] = 1.2  # push an inner control point past its neighbour: the spline folds
    assert fam.folds(p, 28).tolist() == [False, True]


def test_folds_agrees_with_the_jacobian_and_catches_mirrors():
    fam = ThinPlateSpline(4)
    p = fam.random(200, strength=3.0, generator=_gen(8), dtype=F64)
    folds = fam.folds(p, (28, 28))
    assert torch.equal(folds, (fam.jacobian_det(p, 28) <= 0).flatten(1).any(1))
    assert 0 < int(folds.sum()) < 200  # both outcomes occur
    mirror = torch.tensor([[[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]], dtype=F64)  # T(x, y) = (-x, y)
    assert fam.folds(_affine_spline(fam, mirror), 28).tolist() == [True]
    assert fam.folds(_affine_spline(fam, THETA), 28).tolist() == [False, False]


@pytest.mark.parametrize("device", DEVICES)
def test_folds_chunks_and_device(device):
    fam = ThinPlateSpline(3)
    p = fam.random(2100, strength=3.0, generator=_gen(10), dtype=F64)  # more than one chunk of 2048
    folds = fam.folds(p.to(device), 4)
    assert folds.dtype == torch.bool and folds.shape == (2100,) and folds.device.type == device
    assert torch.equal(folds.cpu(), torch.cat([fam.folds(q, 4) for q in p.split(700)]))
