"""The distortion recipes: shapes, ranges, recipes, ground truth, ink kept, determinism.

Ground-truth tolerance (see the README's Data section). The forward direction is
exact: a sample equals ``warp(digit, params)`` to float rounding (1e-5), clutter
aside. Warping a sample back with the inverse of its parameters (a Newton
solve for ``tps``) recovers the digit up to the blur of resampling twice: on the
pixels of the digit's frame that stayed on the canvas, the relative L1 error
``|back - digit|_1 / |digit|_1`` must have a median <= 0.35 and a 90th percentile
<= 0.5 per family (measured: medians 0.21-0.27, 90th percentiles 0.29-0.39; a
pure rotation, which loses nothing but resolution, already gives ~0.21, the
floor set by bilinear interpolation). Pasting without resampling (``mnist``,
``tc``) must be exact. As a control, the parameters of a different sample
give a median error >= 0.8 (measured 1.0-1.4), so the check can tell.
"""

import hashlib
import json
import math

import numpy as np
import pytest
import torch

from stnkit import get_transform, warp
from stnkit.data import DISTORTIONS, bundled_mnist, get_distortion, ink_fraction
from stnkit.data.distortions import PX
from stnkit.geometry import quad_is_convex

CANVAS = {"mnist": 28, "r": 28, "rts": 42, "p": 28, "e": 28, "tc": 60, "perturbed": 28}
TRANSFORM = {
    "mnist": "attention",
    "r": "similarity",
    "rts": "similarity",
    "p": "projective",
    "e": "tps",
    "tc": "attention",
    "perturbed": "projective",
}
EXACT = ("mnist", "tc")  # pasted without resampling


@pytest.fixture(scope="module")
def digits():
    images, _ = bundled_mnist()
    return torch.from_numpy(images[:300].astype(np.float32) / 255.0).unsqueeze(1)


@pytest.fixture(scope="module")
def samples(digits):
    out = {}
    for name in DISTORTIONS:
        dist = get_distortion(name)
        images, params = dist(digits, torch.Generator().manual_seed(0))
        out[name] = (dist, images, params)
    return out


def sha(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()


def test_names():
    assert DISTORTIONS == ("mnist", "r", "rts", "p", "e", "tc", "perturbed")


@pytest.mark.parametrize("name", DISTORTIONS)
def test_shapes_and_ranges(samples, digits, name):
    dist, images, params = samples[name]
    s = CANVAS[name]
    assert dist.name == name and dist.canvas_size == s and dist.transform == TRANSFORM[name]
    assert dist.num_params == get_transform(dist.transform).num_params
    assert images.shape == (digits.shape[0], 1, s, s) and images.dtype == torch.float32
    assert params.shape == (digits.shape[0], dist.num_params) and params.dtype == torch.float32
    assert torch.isfinite(images).all() and torch.isfinite(params).all()
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert images.max() > 0.9  # the digits are there
    json.dumps(dist.recipe())


@pytest.mark.parametrize("name", [n for n in DISTORTIONS if n != "tc"])
def test_forward_ground_truth_is_exact(samples, digits, name):
    dist, images, params = samples[name]
    again = warp(digits, params, dist.transform, out_size=dist.canvas_size)
    assert (again - images).abs().max() < 1e-5


def test_tc_is_the_warped_digit_plus_clutter(samples, digits):
    dist, images, params = samples["tc"]
    clean = warp(digits, params, "attention", out_size=60, mode="nearest")
    assert torch.equal(clean, dist.clean(digits, params))
    assert (clean - images).max() < 1e-5  # the digit is all there (maximum with the clutter)
    extra = ((images - clean) > 1e-5).flatten(1).sum(1)
    assert extra.max() <= 6 * 6 * 6  # what differs is at most 6 patches of 6x6
    assert (extra > 0).float().mean() > 0.8  # and most samples do have clutter
    # the digit sits at an integer position: a plain copy
    pos = (32 - 28 * params[:, 1:].double()) / 2  # top-left corner in pixels, x then y
    assert torch.allclose(pos, pos.round(), atol=1e-4)
    assert pos.round().min() >= 0 and pos.round().max() <= 32
    assert torch.allclose(params[:, 0], torch.full_like(params[:, 0], 60 / 28))
    for i in range(5):
        x, y = (int(v) for v in pos[i].round())
        block = clean[i, 0, y : y + 28, x : x + 28]
        assert torch.equal(block, digits[i, 0])
        rest = clean[i, 0].clone()
        rest[y : y + 28, x : x + 28] = 0
        assert not rest.any()  # nothing outside the block


def _recovery_error(dist, images, params, digits):
    back = dist.canonicalize(images, params)
    visible = (dist.canonicalize(torch.ones_like(images), params) > 0.999).float()
    return ((back - digits).abs() * visible).sum((1, 2, 3)) / (digits * visible).sum((1, 2, 3)).clamp_min(1e-6)


@pytest.mark.parametrize("name", DISTORTIONS)
def test_inverse_ground_truth_recovers_the_digit(samples, digits, name):
    dist, images, params = samples[name]
    n = 120
    images, params, digits = images[:n], params[:n], digits[:n]
    if name == "tc":  # compare the digit, not the clutter that covers part of it
        images = dist.clean(digits, params)
    err = _recovery_error(dist, images, params, digits)
    if name in EXACT:
        assert err.max() < 1e-4
    else:
        assert err.median() <= 0.35, f"{name}: median relative L1 {err.median():.3f}"
        assert err.quantile(0.9) <= 0.5, f"{name}: 90th percentile {err.quantile(0.9):.3f}"
    wrong = _recovery_error(dist, images, params.roll(1, 0), digits)
    if name != "mnist":  # mnist's parameters are all the identity
        assert wrong.median() >= 0.8, f"{name}: the control is too close ({wrong.median():.3f})"


# -- the recipes ---------------------------------------------------------------------------------
def test_r_recipe():
    p = get_distortion("r").draw(4000, torch.Generator().manual_seed(0)).params
    assert torch.equal(p[:, 0], torch.ones(4000)) and not p[:, 2:].any()
    assert p[:, 1].abs().max() <= math.pi / 2 + 1e-6
    assert p[:, 1].min() < -1.5 and p[:, 1].max() > 1.5  # spans the range
    assert abs(float(p[:, 1].std()) - math.pi / math.sqrt(12)) < 0.03  # uniform on [-pi/2, pi/2]
    p = get_distortion("r", angle=10).draw(500, torch.Generator().manual_seed(0)).params
    assert p[:, 1].abs().max() <= math.radians(10) + 1e-6


def test_rts_recipe():
    dist = get_distortion("rts")
    p = dist.draw(4000, torch.Generator().manual_seed(0)).params.double()
    k, a = p[:, 0], p[:, 1]
    s = 1.5 / k  # the content's scale
    assert s.min() >= 0.7 - 1e-5 and s.max() <= 1.2 + 1e-5 and s.min() < 0.72 and s.max() > 1.18
    assert a.abs().max() <= math.pi / 4 + 1e-6 and a.abs().max() > 0.75
    # where the digit's centre lands on the 42x42 canvas, in pixels from the canvas centre
    m = get_transform("similarity").matrix(p)
    centre = torch.linalg.solve(m[:, :2, :2], -m[:, :2, 2]) * 21
    limit = (42 - 28 * s) / 2
    assert (centre.abs() <= limit[:, None] + 1e-4).all()
    assert (centre.abs() / limit[:, None]).max() > 0.98  # uses the whole range


def test_p_recipe_corner_noise():
    dist = get_distortion("p", scale=(1.0, 1.0))
    p = dist.draw(4000, torch.Generator().manual_seed(0)).params.double()
    corners = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]], dtype=torch.float64)
    moved = get_transform("projective").transform_points(p, corners.expand(4000, -1, -1))
    noise = (moved - corners) / PX
    assert abs(float(noise.mean())) < 0.15
    assert 4.7 < float(noise.std()) < 5.2  # 5 px (folded draws, ~0.3%, are redrawn)
    assert quad_is_convex(moved).all()
    # with the shrink: the corners map to (c + n) / s with s in [0.75, 1]
    p = get_distortion("p").draw(2000, torch.Generator().manual_seed(1)).params.double()
    moved = get_transform("projective").transform_points(p, corners.expand(2000, -1, -1))
    assert 1.0 < float(moved.abs().mean()) < 1.0 / 0.75


def test_e_recipe_control_point_noise():
    dist = get_distortion("e", scale=(1.0, 1.0))
    p = dist.draw(3000, torch.Generator().manual_seed(0)).params.double()
    noise = p / PX  # offsets of the 16 control points, in pixels
    assert abs(float(noise.mean())) < 0.05
    assert 1.4 < float(noise.std()) < 1.6
    assert not dist.family.folds(p, 28).any()
    p = get_distortion("e").draw(2000, torch.Generator().manual_seed(1)).params.double()
    w, a = dist.family.coefficients(p)
    scale = torch.linalg.det(a[:, 1:]).sqrt()  # the affine part ~ 1 / s with s ~ U[0.75, 1]
    assert abs(float(scale.mean()) - 4 * math.log(4 / 3)) < 0.02  # E[1 / s] = ln(4/3) / 0.25
    assert not dist.family.folds(p, 28).any()


def test_tc_clutter_comes_from_other_digits():
    n = 40
    values = (torch.arange(n, dtype=torch.float32) + 1) / 64  # digit i is a flat square of value (i + 1) / 64
    digits = values.view(n, 1, 1, 1).expand(n, 1, 28, 28).contiguous()
    dist = get_distortion("tc", n_clutter=20)
    images, params = dist(digits, torch.Generator().manual_seed(0))
    pos = ((32 - 28 * params[:, 1:].double()) / 2).round().long()
    for i in range(n):
        outside = images[i, 0].clone()
        x, y = pos[i].tolist()
        outside[y : y + 28, x : x + 28] = 0
        seen = set(outside[outside > 0].tolist())
        assert seen, "no clutter outside the digit"
        assert values[i].item() not in seen
        assert seen <= set(values.tolist())
    # an explicit pool: clutter only from it
    pool = torch.full((3, 1, 28, 28), 1.0)
    images, _ = dist(digits[:5] * 0, torch.Generator().manual_seed(0), clutter_source=pool)
    assert set(images.unique().tolist()) <= {0.0, 1.0} and images.max() == 1.0


def test_tc_without_clutter_is_the_plain_warp(digits):
    dist = get_distortion("tc", n_clutter=0)
    images, params = dist(digits[:20], torch.Generator().manual_seed(0))
    assert torch.equal(images, warp(digits[:20], params, "attention", out_size=60, mode="nearest"))


def test_options_take_effect(digits):
    images, params = get_distortion("r", angle=0)(digits[:10], torch.Generator().manual_seed(0))
    assert (images - digits[:10]).abs().max() < 1e-5
    dist = get_distortion("rts", angle=0, scale=(1.0, 1.0), canvas_size=56)
    images, params = dist(digits[:10], torch.Generator().manual_seed(0))
    assert images.shape[-1] == 56 and torch.allclose(params[:, 0], torch.full((10,), 2.0)) and not params[:, 1].any()
    assert get_distortion("e", grid_size=3).num_params == 18
    assert get_distortion("tc", canvas_size=40).canvas_size == 40


@pytest.mark.parametrize(
    "name, options, exc, match",
    [
        ("r", {"angels": 3}, TypeError, "unknown option.*angels.*valid options: angle"),
        ("mnist", {"angle": 3}, TypeError, "unknown option"),
        ("r", {"angle": "big"}, TypeError, "angle must be"),
        ("r", {"angle": 200}, ValueError, "angle must be a finite number in"),
        ("rts", {"scale": (1.2, 0.7)}, ValueError, "low <= high"),
        ("rts", {"scale": (0.0, 1.0)}, ValueError, r"scale\[0\]"),
        ("rts", {"canvas_size": 20}, ValueError, "canvas_size must be an int in"),
        ("p", {"noise_std": -1}, ValueError, "noise_std"),
        ("p", {"scale": (0.5, 1.5)}, ValueError, r"scale\[1\]"),
        ("e", {"grid_size": 1}, ValueError, "grid_size"),
        ("tc", {"n_clutter": 2.5}, TypeError, "n_clutter must be an int"),
        ("tc", {"patch_size": 40}, ValueError, "patch_size"),
    ],
)
def test_bad_options(name, options, exc, match):
    with pytest.raises(exc, match=match):
        get_distortion(name, **options)


def test_bad_names_and_digits(digits):
    with pytest.raises(ValueError, match="unknown dataset 'rst'; valid names: mnist, r, rts"):
        get_distortion("rst")
    with pytest.raises(TypeError, match="name must be a str"):
        get_distortion(3)
    dist = get_distortion("r")
    with pytest.raises(TypeError, match="torch.Tensor"):
        dist(digits.numpy())
    with pytest.raises(TypeError, match="float32 in"):
        dist((digits * 255).to(torch.uint8))
    with pytest.raises(ValueError, match=r"shape \(N, 1, 28, 28\)"):
        dist(digits[:, :, :20])
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        dist(digits * 255)
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        dist(digits.clone().fill_(float("nan")))
    with pytest.raises(ValueError, match="at least 2 digits"):
        get_distortion("tc")(digits[:1])


# -- ink kept on the canvas ------------------------------------------------------------------------
# perturbed: no shrink and a shared translation of N(0, 3.5 px), as in the IC-STN paper, so ink
# is cut by design (measured mean 0.936 over 150 digits)
INK_MIN_MEAN = {"mnist": 0.999, "r": 0.99, "rts": 0.99, "p": 0.93, "e": 0.99, "tc": 0.999, "perturbed": 0.9}


@pytest.mark.parametrize("name", DISTORTIONS)
def test_digits_stay_on_the_canvas(samples, digits, name):
    dist, _, params = samples[name]
    frac = ink_fraction(digits[:150], params[:150], dist.transform, dist.canvas_size, mode=dist.mode)
    print(f"ink kept [{name}]: mean {frac.mean():.4f}, 5th percentile {frac.quantile(0.05):.4f}, min {frac.min():.4f}")
    assert frac.max() <= 1.0 + 1e-6
    assert frac.mean() >= INK_MIN_MEAN[name]
    if name in EXACT:
        assert frac.min() > 0.999  # placed whole


def test_ink_fraction_measures_what_is_cut_off(digits):
    dist = get_distortion("r")
    d = digits[:8]
    # tx = 1 (14 px): the canvas shows only the right half of the digit
    params = torch.tensor([[1.0, 0.0, 1.0, 0.0]]).expand(8, -1)
    expected = d[..., 14:].sum((1, 2, 3)) / d.sum((1, 2, 3))
    assert torch.allclose(ink_fraction(d, params, dist.transform, 28), expected, atol=1e-4)
    # shrinking keeps everything, whatever the change of area
    params = torch.tensor([[2.0, 0.3, 0.0, 0.0]]).expand(8, -1)
    assert torch.allclose(ink_fraction(d, params, dist.family, 28), torch.ones(8), atol=1e-5)
    # on a canvas twice as wide nothing is cut off
    params = torch.tensor([[2.0, 0.0, 1.0, 0.0]]).expand(8, -1)  # the 56 canvas, digit shifted by 14 px
    assert torch.allclose(ink_fraction(d, params, "similarity", 56), torch.ones(8), atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"factor": 4}, ValueError, "factor must be odd"),
        ({"factor": 0}, ValueError, "factor must be a positive int"),
        ({"canvas_size": 2.5}, TypeError, "canvas_size must be an int"),
        ({"chunk_size": 0}, ValueError, "chunk_size must be a positive int"),
        ({"transform": "shear"}, ValueError, "unknown transform 'shear'"),
        ({"digits": torch.zeros(2, 28, 28)}, ValueError, r"digits must have shape \(N, 1, 28, 28\)"),
    ],
)
def test_ink_fraction_exceptions(digits, kwargs, exc, match):
    args = {"digits": digits[:2], "params": torch.tensor([[1.0, 0.0, 0.0]] * 2), "transform": "attention"}
    args = {**args, "canvas_size": 28, **kwargs}
    with pytest.raises(exc, match=match):
        ink_fraction(**args)


# -- determinism -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", DISTORTIONS)
def test_same_seed_same_bytes(samples, digits, name):
    dist, images, params = samples[name]
    again_images, again_params = get_distortion(name)(digits, torch.Generator().manual_seed(0), chunk_size=37)
    assert sha(images) == sha(again_images) and sha(params) == sha(again_params)
    if name != "mnist":
        other, _ = dist(digits, torch.Generator().manual_seed(1))
        assert sha(other) != sha(images)


def test_thread_count_does_not_change_the_bytes(digits):
    before = torch.get_num_threads()
    try:
        hashes = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            hashes.append([sha(get_distortion(n)(digits, torch.Generator().manual_seed(3))[0]) for n in DISTORTIONS])
    finally:
        torch.set_num_threads(before)
    assert hashes[0] == hashes[1]


def test_canonicalize_shape_and_size(samples):
    dist, images, params = samples["rts"]
    assert dist.canonicalize(images[:4], params[:4]).shape == (4, 1, 28, 28)
    assert dist.canonicalize(images[:4], params[:4], out_size=14).shape == (4, 1, 14, 14)
