"""stnkit.nn.diagnostics: sampling-grid statistics, the collapse warning, the coverage penalty.

Expected values are computed without stnkit where they can be: the outside fraction of a
zoom from the pixel centres written out as fractions, scales from determinants written out.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

from stnkit.geometry import TRANSFORMS, get_transform
from stnkit.nn import (
    COLLAPSED_SCALE,
    IDENTITY_DISTANCE,
    OUTSIDE_FRACTION_WARN,
    SpatialTransformer,
    collapse_warning,
    coverage_penalty,
    sampling_grid_stats,
    sampling_stats,
)

F64 = torch.float64


def centres(n: int) -> list[Fraction]:
    """Pixel centres of n pixels in normalised coordinates (align_corners=False), exactly."""
    return [Fraction(2 * j + 1, n) - 1 for j in range(n)]


def zoom_outside_fraction(s: Fraction, h: int, w: int) -> float:
    """Fraction of output pixel centres p with |s p_x| > 1 or |s p_y| > 1."""
    inside_x = sum(abs(s * x) <= 1 for x in centres(w))
    inside_y = sum(abs(s * y) <= 1 for y in centres(h))
    return float(1 - Fraction(inside_x * inside_y, w * h))


@pytest.mark.parametrize("name", list(TRANSFORMS))
@pytest.mark.parametrize("align_corners", [False, True])
def test_identity(name, align_corners):
    fam = get_transform(name)
    stats = sampling_stats(fam, fam.identity(3), (9, 12), align_corners)
    # align_corners=True puts the border pixels exactly at +-1: still inside
    assert stats["outside_fraction"] == 0.0 and stats["nonfinite"] == 0
    assert stats["mean_scale"] == pytest.approx(1.0, abs=1e-5)
    assert stats["identity_distance"] < 1e-6
    assert collapse_warning(stats) is None


@pytest.mark.parametrize(("h", "w"), [(8, 8), (7, 7), (13, 9)])
def test_zoom_out_by_two(h, w):
    theta = torch.tensor([[2.0, 0.0, 0.0, 0.0, 2.0, 0.0]])
    expected = zoom_outside_fraction(Fraction(2), h, w)
    assert 0.7 < expected < 0.85  # 0.75 for even sizes, a little more for odd ones
    stats = sampling_stats("affine", theta, (h, w))
    assert stats["mean_scale"] == pytest.approx(2.0, abs=1e-6)
    assert stats["outside_fraction"] == pytest.approx(expected, abs=1e-12)
    # the points move from p to 2 p: RMS distance |p| over the centres
    rms = math.sqrt(sum(float(x) ** 2 for x in centres(w)) / w + sum(float(y) ** 2 for y in centres(h)) / h)
    assert stats["identity_distance"] == pytest.approx(rms, rel=1e-5)
    message = collapse_warning(stats)
    assert message.startswith("spatial transformer zoomed or moved out past the image") and "--bounded" in message


def test_collapsed_affine_warns():
    theta = torch.tensor([[0.0, 0.0, 0.3, 0.0, 0.0, -0.2]])  # every output pixel reads one input point
    stats = sampling_stats("affine", theta, 10)
    assert stats["mean_scale"] == 0.0 and stats["outside_fraction"] == 0.0
    assert sampling_grid_stats(get_transform("affine").grid(theta, 10))["mean_scale"] == 0.0
    message = collapse_warning(stats)
    assert message.startswith("spatial transformer collapsed to a point") and "--bounded" in message
    assert "\n" not in message


@pytest.mark.parametrize("seed", range(3))
def test_matrix_and_finite_difference_scales_agree_on_affine(seed):
    gen = torch.Generator().manual_seed(seed)
    theta = get_transform("affine").random(4, 3.0, generator=gen, dtype=F64)
    m = theta.view(4, 2, 3)
    expected = (m[:, 0, 0] * m[:, 1, 1] - m[:, 0, 1] * m[:, 1, 0]).abs().sqrt().mean().item()
    exact = sampling_stats("affine", theta, (11, 14))["mean_scale"]
    grid = F.affine_grid(m, [4, 1, 11, 14], align_corners=False)  # without stnkit
    fd = sampling_grid_stats(grid)["mean_scale"]
    assert exact == pytest.approx(expected, rel=1e-12)
    assert fd == pytest.approx(expected, rel=1e-9)


def test_projective_scale_is_the_mean_over_points():
    h = torch.tensor([[1.1, 0.1, 0.05, -0.1, 0.9, 0.0, 0.3, -0.2]], dtype=F64)
    exact = sampling_stats("projective", h, (64, 64))["mean_scale"]
    fd = sampling_grid_stats(get_transform("projective").grid(h, (64, 64)))["mean_scale"]
    affine_part = math.sqrt(1.1 * 0.9 + 0.1 * 0.1)
    assert exact == pytest.approx(fd, rel=1e-3)
    assert abs(exact - affine_part) > 1e-2  # the perspective terms matter: not the 2x2 part's determinant


def test_tps_scale_by_finite_differences_matches_the_exact_jacobian():
    tps = get_transform("tps", grid_size=3)
    params = tps.random(2, 1.0, generator=torch.Generator().manual_seed(0), dtype=F64)
    assert not tps.folds(params, 64).any()
    exact = tps.jacobian_det(params, 64).abs().sqrt().mean().item()
    assert sampling_stats(tps, params, 64)["mean_scale"] == pytest.approx(exact, rel=2e-3)
    shrink = -0.5 * tps.control_points.view(1, -1)  # T(u) = u / 2: zoom in by 2
    assert sampling_stats(tps, shrink, 16)["mean_scale"] == pytest.approx(0.5, rel=1e-6)


def test_nonfinite_samples_are_counted_and_left_out():
    theta = torch.tensor([[1.0, 0.0, 0.0, 0.0, 1.0, 0.0], [math.nan, 0.0, 0.0, 0.0, 1.0, 0.0]])
    stats = sampling_stats("affine", theta, 8)
    assert stats["nonfinite"] == 1 and stats["mean_scale"] == 1.0 and stats["outside_fraction"] == 0.0
    assert collapse_warning(stats).startswith("spatial transformer parameters went NaN/inf (1 non-finite)")
    all_bad = sampling_stats("affine", theta[1:], 8)
    assert all_bad["nonfinite"] == 1 and math.isnan(all_bad["mean_scale"])
    grid = torch.zeros(1, 2, 2, 2)
    grid[0, 0, 0, 0] = math.inf
    g = sampling_grid_stats(grid)
    assert g["nonfinite"] == 1 and g["outside_fraction"] == 0.25


def test_sampling_stats_uses_the_transformers_grid():
    torch.manual_seed(0)
    st = SpatialTransformer(transform="similarity", in_channels=1, in_size=16, out_size=(8, 10))
    x = torch.rand(3, 1, 16, 16)
    params = st.predict_params(x)
    with torch.no_grad():
        st.head.bias.copy_(torch.tensor([2.5, 0.0, 0.0, 0.0]))  # zoom out by 2.5
        params = st.predict_params(x)
    stats = sampling_stats(st.family, params, st.out_size)
    assert stats == sampling_grid_stats(st.grid(params.detach(), (16, 16))) | {"mean_scale": stats["mean_scale"]}
    assert stats["mean_scale"] == pytest.approx(2.5, rel=1e-6)


def test_translation_half_out():
    stats = sampling_stats("translation", torch.tensor([[1.0, 0.0]]), (6, 8))
    assert stats["outside_fraction"] == 0.5 and stats["mean_scale"] == 1.0
    assert stats["identity_distance"] == pytest.approx(1.0)
    assert collapse_warning(stats) is None  # exactly at the threshold: no warning (strictly more than half)


# -- collapse_warning -----------------------------------------------------------------------
OK = {"outside_fraction": 0.1, "mean_scale": 0.8, "identity_distance": 0.1, "nonfinite": 0}


def test_thresholds_are_the_documented_constants():
    assert (OUTSIDE_FRACTION_WARN, COLLAPSED_SCALE, IDENTITY_DISTANCE) == (0.5, 0.05, 1e-3)
    assert collapse_warning({**OK, "outside_fraction": 0.51}) is not None
    assert collapse_warning({**OK, "outside_fraction": 0.49}) is None
    assert collapse_warning({**OK, "mean_scale": 0.049}) is not None
    assert collapse_warning({**OK, "mean_scale": 0.051}) is None
    assert collapse_warning({**OK, "outside_fraction": 0.3}, outside_threshold=0.2) is not None


def test_identity_warning_needs_training_to_have_started():
    still = {**OK, "identity_distance": 1e-5}
    assert collapse_warning(still) is None  # at initialisation the identity is expected
    assert collapse_warning([still]) is None
    message = collapse_warning([still, still])
    assert message.startswith("spatial transformer never left the identity") and "--loc-lr-mult" in message
    assert collapse_warning(still, started=True) == message
    assert collapse_warning([still, OK, still]) is None  # it left the identity once
    assert collapse_warning([still, {**still, "identity_distance": 2e-3}]) is None


def test_severity_order():
    everything = {"outside_fraction": 0.9, "mean_scale": 0.0, "identity_distance": 0.0, "nonfinite": 2}
    assert "NaN/inf" in collapse_warning(everything)
    assert "collapsed" in collapse_warning({**everything, "nonfinite": 0})


@pytest.mark.parametrize(
    ("stats", "exc", "message"),
    [
        ([], TypeError, "stats must be a dict of sampling statistics or a non-empty list of them, got []"),
        (3, TypeError, "stats must be a dict of sampling statistics or a non-empty list of them, got 3"),
        (
            {"mean_scale": 1.0},
            ValueError,
            "stats[0] must have the keys outside_fraction, mean_scale, identity_distance",
        ),
    ],
)
def test_collapse_warning_errors(stats, exc, message):
    with pytest.raises(exc, match="^" + re.escape(message)):
        collapse_warning(stats)


# -- coverage_penalty -----------------------------------------------------------------------
def test_penalty_zero_inside_and_its_gradient():
    grid = torch.tensor([[[[0.5, -0.9], [1.0, -1.0]], [[1.5, 0.0], [-0.2, -3.0]]]], requires_grad=True)
    penalty = coverage_penalty(grid)
    assert penalty.item() == pytest.approx((0.5**2 + 2.0**2) / 4)
    penalty.backward()
    g = grid.grad
    assert torch.equal(g[0, 0], torch.zeros(2, 2))  # inside, and on the border
    assert g[0, 1, 0, 0] > 0 and g[0, 1, 0, 1] == 0  # x = 1.5 outside, y = 0 inside
    assert g[0, 1, 1, 1] < 0 and g[0, 1, 1, 0] == 0  # descent moves y = -3 back towards -1
    inside = torch.rand(2, 5, 5, 2) * 2 - 1
    assert coverage_penalty(inside).item() == 0.0


def test_penalty_gradcheck():
    grid = (3 * torch.randn(2, 4, 5, 2, dtype=F64, generator=torch.Generator().manual_seed(0))).requires_grad_()
    assert (grid.abs() > 1).any() and (grid.abs() < 1).any()
    assert gradcheck(coverage_penalty, (grid,))


def test_penalty_pulls_a_zoomed_out_transformer_in():
    theta = torch.tensor([[2.0, 0.0, 0.0, 0.0, 2.0, 0.0]], requires_grad=True)
    coverage_penalty(get_transform("affine").grid(theta, 8)).backward()
    assert theta.grad[0, 0] > 0 and theta.grad[0, 4] > 0  # gradient descent lowers the scale


@pytest.mark.parametrize("fn", [coverage_penalty, sampling_grid_stats])
def test_grid_errors(fn):
    with pytest.raises(
        ValueError, match=re.escape("grid must have shape (B, H, W, 2) with B, H, W > 0, got shape (4, 4, 2)")
    ):
        fn(torch.zeros(4, 4, 2))
    with pytest.raises(TypeError, match="^grid must have a floating dtype"):
        fn(torch.zeros(1, 4, 4, 2, dtype=torch.int64))
