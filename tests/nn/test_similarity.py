"""stnkit.nn.similarity against direct numpy computations and the laws each loss obeys."""

import math

import numpy as np
import pytest
import torch

from stnkit.nn.similarity import dice_loss, mi_loss, mse_loss, ncc_loss, similarity_loss, smoothness_loss


def _ncc_reference(a: np.ndarray, b: np.ndarray, w: int, eps: float) -> float:
    """VoxelMorph-style local NCC by explicit windows over a zero-padded 2-D image (one channel)."""
    r = w // 2
    pa, pb = np.pad(a, r), np.pad(b, r)
    n = w * w
    vals = []
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            wa, wb = pa[i : i + w, j : j + w], pb[i : i + w, j : j + w]
            ma, mb = wa.sum() / n, wb.sum() / n
            cov = (wa * wb).sum() / n - ma * mb
            va = max((wa * wa).sum() / n - ma * ma, 0.0)
            vb = max((wb * wb).sum() / n - mb * mb, 0.0)
            vals.append(cov * cov / (va * vb + eps))
    return -float(np.mean(vals))


def test_mse_matches_numpy():
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 3, 5, 6, generator=g), torch.rand(2, 3, 5, 6, generator=g)
    assert float(mse_loss(a, b)) == pytest.approx(float(np.mean((a.numpy() - b.numpy()) ** 2)), rel=1e-6)


@pytest.mark.parametrize("window", [1, 3, 5])
def test_ncc_matches_explicit_windows(window):
    g = torch.Generator().manual_seed(1)
    a = torch.rand(1, 1, 7, 8, generator=g, dtype=torch.float64)
    b = 0.5 * a + 0.5 * torch.rand(1, 1, 7, 8, generator=g, dtype=torch.float64)
    ref = _ncc_reference(a[0, 0].numpy(), b[0, 0].numpy(), window, 1e-5)
    assert float(ncc_loss(a, b, window=window)) == pytest.approx(ref, rel=1e-9, abs=1e-12)


def test_ncc_is_minus_one_for_a_linear_intensity_change_and_works_in_3d():
    g = torch.Generator().manual_seed(2)
    a = torch.rand(2, 1, 6, 7, 8, generator=g, dtype=torch.float64)
    assert float(ncc_loss(a, -2 * a, window=3, eps=1e-12)) == pytest.approx(-1.0, abs=1e-6)
    assert float(ncc_loss(a, torch.rand(2, 1, 6, 7, 8, generator=g, dtype=torch.float64), window=3)) > -0.5


def test_mi_of_an_image_with_itself_is_its_entropy_and_of_independent_images_near_zero():
    bins = 8
    levels = torch.arange(bins, dtype=torch.float64) / (bins - 1)  # exactly the bin centres
    x = levels.repeat(64)[torch.randperm(bins * 64, generator=torch.Generator().manual_seed(3))]
    x = x.reshape(1, 1, 16, 32)
    assert float(-mi_loss(x, x, bins=bins, sigma=1e-3)) == pytest.approx(math.log(bins), rel=1e-6)
    g = torch.Generator().manual_seed(4)
    a, b = torch.rand(1, 1, 128, 128, generator=g), torch.rand(1, 1, 128, 128, generator=g)
    assert abs(float(mi_loss(a, b, bins=16))) < 0.02
    # MI sees through a monotone change of intensity, MSE does not
    assert float(-mi_loss(a, a.sqrt(), bins=16)) > 0.5 > float(-mi_loss(a, b, bins=16))


def test_smoothness_is_zero_for_a_constant_field_and_matches_finite_differences():
    assert float(smoothness_loss(torch.full((1, 3, 4, 5, 6), 0.3))) == 0.0
    g = torch.Generator().manual_seed(5)
    u = torch.rand(2, 2, 5, 6, generator=g, dtype=torch.float64)
    n = u.numpy()
    ref = (np.mean(np.diff(n, axis=2) ** 2) + np.mean(np.diff(n, axis=3) ** 2)) / 2
    assert float(smoothness_loss(u)) == pytest.approx(ref, rel=1e-12)


def test_dice_of_binary_masks_matches_set_overlap():
    a = torch.zeros(1, 2, 4, 4)
    b = torch.zeros(1, 2, 4, 4)
    a[0, 0, :2] = 1  # 8 pixels
    b[0, 0, 1:3] = 1  # 8 pixels, 4 shared -> Dice 0.5
    a[0, 1, 3] = 1  # 4 pixels
    b[0, 1, 3] = 1  # identical -> Dice 1
    assert float(dice_loss(a, b)) == pytest.approx(1 - (0.5 + 1.0) / 2, abs=1e-6)


@pytest.mark.parametrize("name", ["mse", "ncc", "mi"])
def test_similarities_are_differentiable_in_float64(name):
    g = torch.Generator().manual_seed(6)
    a = torch.rand(1, 1, 5, 5, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.rand(1, 1, 5, 5, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, y: similarity_loss(name, x, y), (a, b))


def test_smoothness_and_dice_gradcheck():
    g = torch.Generator().manual_seed(7)
    u = torch.rand(1, 3, 3, 4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(smoothness_loss, (u,))
    a = torch.rand(1, 2, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.rand(1, 2, 4, 4, generator=g, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: dice_loss(x, b), (a,))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: mse_loss(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5)), "a and b must have the same shape"),
        (lambda: ncc_loss(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), window=4), "window must be odd"),
        (lambda: similarity_loss("l1", torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4)), "loss must be one of"),
        (lambda: smoothness_loss(torch.zeros(1, 3, 4, 4)), "u must have 2 channels"),
        (lambda: mi_loss(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), bins=1), "bins"),
        (lambda: mse_loss(torch.zeros(4, 4), torch.zeros(4, 4)), "a must have shape"),
    ],
)
def test_bad_input_gets_one_line(call, message):
    with pytest.raises((ValueError, TypeError), match=message) as info:
        call()
    assert "\n" not in str(info.value)


def _ncc_by_pooling(a: torch.Tensor, b: torch.Tensor, w: int, eps: float = 1e-5) -> torch.Tensor:
    """The straightforward local NCC: five cubic ``avg_pool`` calls (what ncc_loss computed before its
    separable box filter)."""
    pool = torch.nn.functional.avg_pool2d if a.ndim == 4 else torch.nn.functional.avg_pool3d

    def box(x):  # zero padding made explicit: avg_pool refuses a window over an unpadded side
        return pool(torch.nn.functional.pad(x, [w // 2] * (2 * (x.ndim - 2))), w, stride=1)

    ma, mb = box(a), box(b)
    cov = box(a * b) - ma * mb
    va = (box(a * a) - ma * ma).clamp_min(0)
    vb = (box(b * b) - mb * mb).clamp_min(0)
    return -(cov * cov / (va * vb + eps)).mean()


@pytest.mark.parametrize("shape", [(2, 3, 9, 11), (1, 1, 7, 12, 10), (2, 2, 5, 6, 33)])
@pytest.mark.parametrize("window", [1, 3, 9])
def test_separable_box_mean_and_ncc_agree_with_cubic_pooling(shape, window):
    from stnkit.nn.similarity import _box_mean

    g = torch.Generator().manual_seed(5)
    a = torch.rand(*shape, generator=g, dtype=torch.float64)
    b = (0.3 * a + torch.rand(*shape, generator=g, dtype=torch.float64)).requires_grad_(True)
    a.requires_grad_(True)
    pool = torch.nn.functional.avg_pool2d if len(shape) == 4 else torch.nn.functional.avg_pool3d
    ref = pool(torch.nn.functional.pad(a, [window // 2] * (2 * len(shape) - 4)), window, stride=1)
    assert torch.allclose(_box_mean(a, window), ref, rtol=0, atol=1e-12)
    if window <= min(shape[2:]):  # the padding argument of avg_pool, as ncc_loss used it before
        assert torch.allclose(ref, pool(a, window, stride=1, padding=window // 2, count_include_pad=True))
    ours = ncc_loss(a, b, window=window)
    theirs = _ncc_by_pooling(a, b, window)
    assert float(ours) == pytest.approx(float(theirs), rel=1e-10, abs=1e-12)
    ga = torch.autograd.grad(ours, (a, b))
    gb = torch.autograd.grad(theirs, (a, b))
    for x, y in zip(ga, gb):
        assert torch.allclose(x, y, rtol=1e-8, atol=1e-12)
    # float32 on a registration-sized volume: within float tolerance of the cubic pooling
    x = torch.rand(1, 1, 32, 32, 32, generator=g)
    y = (0.5 * x + 0.5 * torch.rand(1, 1, 32, 32, 32, generator=g)).requires_grad_(True)
    assert float(ncc_loss(x, y, window=9)) == pytest.approx(float(_ncc_by_pooling(x, y, 9)), rel=1e-5)


def _ncc_map_reference(a: np.ndarray, b: np.ndarray, w: int, eps: float) -> np.ndarray:
    """The per-point correlations of ``_ncc_reference`` (explicit windows over the zero-padded images)."""
    r = w // 2
    pa, pb, n = np.pad(a, r), np.pad(b, r), w * w
    out = np.zeros(a.shape)
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            wa, wb = pa[i : i + w, j : j + w], pb[i : i + w, j : j + w]
            ma, mb = wa.sum() / n, wb.sum() / n
            cov = (wa * wb).sum() / n - ma * mb
            va, vb = max((wa * wa).sum() / n - ma * ma, 0.0), max((wb * wb).sum() / n - mb * mb, 0.0)
            out[i, j] = cov * cov / (va * vb + eps)
    return out


def test_masked_losses_are_weighted_means_over_the_mask():
    g = torch.Generator().manual_seed(8)
    a, b = (
        torch.rand(1, 1, 7, 9, generator=g, dtype=torch.float64),
        torch.rand(1, 1, 7, 9, generator=g, dtype=torch.float64),
    )
    m = torch.rand(1, 1, 7, 9, generator=g, dtype=torch.float64)
    an, bn, mn = a[0, 0].numpy(), b[0, 0].numpy(), m[0, 0].numpy()
    assert float(mse_loss(a, b, mask=m)) == pytest.approx(float((mn * (an - bn) ** 2).sum() / mn.sum()), rel=1e-9)
    cc = _ncc_map_reference(an, bn, 3, 1e-5)
    assert float(ncc_loss(a, b, window=3, mask=m)) == pytest.approx(-float((mn * cc).sum() / mn.sum()), rel=1e-9)
    ones = torch.ones_like(m)
    for name in ("mse", "ncc", "mi"):  # a mask of ones is no mask
        assert float(similarity_loss(name, a, b, mask=ones)) == pytest.approx(
            float(similarity_loss(name, a, b)), rel=1e-9
        )


def test_a_masked_loss_ignores_what_lies_outside_the_mask():
    g = torch.Generator().manual_seed(9)
    a = torch.rand(2, 1, 12, 14, generator=g, dtype=torch.float64)
    b = 0.7 * a + 0.3 * torch.rand(2, 1, 12, 14, generator=g, dtype=torch.float64)
    m = torch.zeros(2, 1, 12, 14, dtype=torch.float64)
    m[..., 2:10, 3:11] = 1
    far = b.clone()
    far[..., :, :1] = 9.0  # changed only outside the mask (and outside every window of a masked point, for ncc)
    assert float(mse_loss(a, far, mask=m)) == pytest.approx(float(mse_loss(a, b, mask=m)), rel=1e-12)
    assert float(ncc_loss(a, far, window=3, mask=m)) == pytest.approx(
        float(ncc_loss(a, b, window=3, mask=m)), rel=1e-12
    )
    assert float(mi_loss(a, far, mask=m)) == pytest.approx(float(mi_loss(a, b, mask=m)), rel=1e-9)
    assert float(mse_loss(a, far)) != pytest.approx(float(mse_loss(a, b)), rel=1e-3)  # unmasked, it counts
    assert torch.autograd.gradcheck(
        lambda x: similarity_loss("mi", x, b[:1, :, :5, :5], mask=m[:1, :, :5, :5] * 0.5 + 0.25),
        (a[:1, :, :5, :5].clone().requires_grad_(True),),
    )


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (torch.ones(1, 2, 4, 4), r"mask must have shape \(1, 1, 4, 4\)"),
        (torch.full((1, 1, 4, 4), 2.0), r"mask must hold weights in \[0, 1\]"),
        (np.ones((1, 1, 4, 4)), "mask must be a torch.Tensor or None, got ndarray"),
    ],
)
def test_bad_masks_get_one_line(mask, message):
    with pytest.raises((ValueError, TypeError), match=message) as info:
        ncc_loss(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), mask=mask)
    assert "\n" not in str(info.value)
