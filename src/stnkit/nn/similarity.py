"""Similarity and regularity losses for aligning images and volumes: what registration minimises.

Every function takes batches of shape (B, C, H, W) or (B, C, D, H, W) and returns a scalar tensor, the mean
over the batch, differentiable in both arguments; lower is better for every loss (``ncc_loss`` and
``mi_loss`` are the negatives of the similarities they are named after).

- :func:`mse_loss`: mean squared difference, for images of the same modality and intensity scale.
- :func:`ncc_loss`: local normalised cross-correlation in a cubic window (VoxelMorph's default similarity),
  insensitive to a local linear change of intensity; ``-1`` for a perfect match.
- :func:`mi_loss`: global mutual information with Parzen (Gaussian) histograms, for different modalities.
- :func:`smoothness_loss`: the mean squared spatial gradient of a field (diffusion regulariser).
- :func:`dice_loss`: one minus the soft Dice overlap of label maps (one-hot or probabilities).

``mse_loss``, ``ncc_loss`` and ``mi_loss`` take an optional ``mask`` (B, 1, *spatial), weights in [0, 1]:
the loss is then taken over the masked points only (a weighted mean), as ITK's metrics count only the points
that map inside the moving image; a mask of ones gives the unmasked loss.

>>> import torch
>>> x = torch.rand(2, 1, 16, 16)
>>> float(mse_loss(x, x))
0.0
>>> round(float(ncc_loss(x, 3 * x)), 3)
-1.0
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import check_image_or_volume, check_int, check_number

__all__ = ["SIMILARITIES", "dice_loss", "mi_loss", "mse_loss", "ncc_loss", "similarity_loss", "smoothness_loss"]


def _pair(a: object, b: object) -> tuple[Tensor, Tensor]:
    a = check_image_or_volume("a", a)
    b = check_image_or_volume("b", b)
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    return a, b


def _mask(mask: object, a: Tensor) -> Tensor | None:
    """``mask`` checked against ``a``: ``(B, 1, *spatial)`` of ``a``'s batch and points, weights in [0, 1]."""
    if mask is None:
        return None
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask must be a torch.Tensor or None, got {type(mask).__name__}")
    want = (a.shape[0], 1, *a.shape[2:])
    if tuple(mask.shape) != want:
        raise ValueError(f"mask must have shape {want} (batch, 1, *spatial of a), got {tuple(mask.shape)}")
    if mask.numel() and (float(mask.min()) < 0 or float(mask.max()) > 1):
        raise ValueError(f"mask must hold weights in [0, 1], got values in [{float(mask.min())}, {float(mask.max())}]")
    return mask.to(a.dtype)


def _masked_mean(x: Tensor, mask: Tensor | None) -> Tensor:
    """The mean of ``x`` (B, C, *spatial), weighted by ``mask`` (B, 1, *spatial) where given (0 if empty)."""
    if mask is None:
        return x.mean()
    weights = mask.expand_as(x)
    return (x * weights).sum() / weights.sum().clamp_min(1e-12)


def mse_loss(a: Tensor, b: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean squared difference of ``a`` and ``b`` (over the points of ``mask`` where given)."""
    a, b = _pair(a, b)
    return _masked_mean((a - b).pow(2), _mask(mask, a))


def _box_mean(x: Tensor, window: int) -> Tensor:
    """The mean of ``x`` in a ``window``-wide cube around each point (zero padding counted as samples).

    Separable: a running sum (``cumsum`` of the zero-padded input) along each spatial axis in turn, the
    window's sum the difference of two of its entries: ``O(dims)`` work per point whatever the window,
    where a cubic ``avg_pool3d`` costs ``window**3`` (a 9-voxel window: 729 multiply-adds per voxel, and as
    many again in its backward). The same numbers as ``avg_pool(x, window, stride=1, padding=window // 2,
    count_include_pad=True)`` up to float rounding (the test compares them).
    """
    dims = x.ndim - 2
    r = window // 2
    for axis in range(2, x.ndim):
        n = x.shape[axis]
        pad = [0] * (2 * dims)
        # one zero more before the window's first sample, so that sum[j] = c[j + window] - c[j]
        pad[2 * (x.ndim - 1 - axis)], pad[2 * (x.ndim - 1 - axis) + 1] = r + 1, r
        c = F.pad(x, pad).cumsum(axis)
        x = c.narrow(axis, window, n) - c.narrow(axis, 0, n)
    return x / float(window**dims)


def ncc_loss(a: Tensor, b: Tensor, window: int = 9, eps: float = 1e-5, mask: Tensor | None = None) -> Tensor:
    """Minus the local normalised cross-correlation of ``a`` and ``b`` in ``window``-wide windows (odd).

    Per window: ``cov(a, b)^2 / (var(a) var(b) + eps)``, as VoxelMorph's NCC (a squared correlation, so it is
    in [0, 1]), averaged over points, channels and batch. The windows at the border see zero padding, as a
    convolution's do: ``-1`` when ``b`` is a multiple of ``a`` (any sign), and for ``b = k a + c`` in the
    windows that lie inside; windows without contrast contribute 0. The five window means (of ``a``, ``b``,
    ``a a``, ``b b``, ``a b``) are taken in one separable pass (:func:`_box_mean`).

    With ``mask``: the windows' correlations are averaged over the masked points, weighted by the mask (the
    windows themselves are those of the images as given; multiplying both images by the mask instead would
    give them a common edge that correlates whatever the alignment).
    """
    a, b = _pair(a, b)
    window = check_int("window", window, low=1, high=255)
    if window % 2 == 0:
        raise ValueError(f"window must be odd, got {window}")
    eps = check_number("eps", eps, low=0.0)
    mask = _mask(mask, a)
    ma, mb, maa, mbb, mab = _box_mean(torch.cat([a, b, a * a, b * b, a * b], 1), window).chunk(5, 1)
    cov = mab - ma * mb
    va = (maa - ma * ma).clamp_min(0)
    vb = (mbb - mb * mb).clamp_min(0)
    cc = cov * cov / (va * vb + eps)
    return -_masked_mean(cc, mask)


def mi_loss(a: Tensor, b: Tensor, bins: int = 32, sigma: float | None = None, mask: Tensor | None = None) -> Tensor:
    """Minus the mutual information (nats) of ``a`` and ``b``, from a Parzen joint histogram.

    Intensities are rescaled to [0, 1] per image (over all its channels and points), then each sample is
    spread over ``bins`` bin centres with a Gaussian of width ``sigma`` (default: one bin width). Each image
    of the batch gets its own histogram; the result is the mean of the batch's ``-MI``. With ``mask``, each
    point counts in the histogram with its weight (and the intensity range is that of the masked points).
    """
    a, b = _pair(a, b)
    mask = _mask(mask, a)
    bins = check_int("bins", bins, low=2, high=256)
    if sigma is None:
        sigma = 1.0 / (bins - 1)
    sigma = check_number("sigma", sigma, low=1e-6)
    n = a.shape[0]

    # each point's weight, one per (channel, point) as the samples are flattened
    w = None if mask is None else mask.expand_as(a).reshape(n, -1)

    def unit(x: Tensor) -> Tensor:
        x = x.reshape(n, -1)
        if w is None:
            lo, hi = x.amin(1, keepdim=True), x.amax(1, keepdim=True)
        else:  # the range of the masked points
            inside = w > 0
            big = torch.finfo(x.dtype).max
            lo = torch.where(inside, x, x.new_tensor(big)).amin(1, keepdim=True)
            hi = torch.where(inside, x, x.new_tensor(-big)).amax(1, keepdim=True)
            lo, hi = torch.minimum(lo, hi), torch.maximum(lo, hi)
        return ((x - lo) / (hi - lo).clamp_min(1e-12)).clamp(0, 1)

    ua, ub = unit(a), unit(b)
    centres = torch.linspace(0, 1, bins, dtype=ua.dtype, device=ua.device)
    wa = torch.exp(-0.5 * ((ua[..., None] - centres) / sigma) ** 2)  # (B, N, bins)
    wb = torch.exp(-0.5 * ((ub[..., None] - centres) / sigma) ** 2)
    wa = wa / wa.sum(-1, keepdim=True).clamp_min(1e-12)
    wb = wb / wb.sum(-1, keepdim=True).clamp_min(1e-12)
    if w is None:
        joint = torch.bmm(wa.transpose(1, 2), wb) / ua.shape[1]  # (B, bins, bins), sums to 1
    else:
        joint = torch.bmm((wa * w[..., None]).transpose(1, 2), wb) / w.sum(1).clamp_min(1e-12)[:, None, None]
    pa = joint.sum(2, keepdim=True)
    pb = joint.sum(1, keepdim=True)
    tiny = torch.finfo(joint.dtype).tiny
    mi = (joint * (torch.log(joint + tiny) - torch.log(pa * pb + tiny))).sum((1, 2))
    return -mi.mean()


def smoothness_loss(u: Tensor) -> Tensor:
    """The mean squared forward difference of a field ``u`` (B, 2|3, *spatial) along each spatial axis.

    The diffusion regulariser of VoxelMorph (its ``Grad('l2')``): 0 for a constant field; in the units of the
    field per grid step.
    """
    u = check_image_or_volume("u", u)
    dims = u.ndim - 2
    if u.shape[1] != dims:
        raise ValueError(f"u must have {dims} channels for a {dims}-D field, got shape {tuple(u.shape)}")
    total = u.new_zeros(())
    for axis in range(2, u.ndim):
        if u.shape[axis] > 1:
            total = total + torch.diff(u, dim=axis).pow(2).mean()
    return total / dims


def dice_loss(a: Tensor, b: Tensor, eps: float = 1e-6) -> Tensor:
    """One minus the soft Dice overlap of label maps ``a`` and ``b`` (one-hot or probabilities, channel = label).

    The Dice of each channel is ``2 |a b| / (|a| + |b|)``; channels empty in both count as a perfect match.
    The result is one minus the mean over channels and batch.
    """
    a, b = _pair(a, b)
    dims = tuple(range(2, a.ndim))
    inter = (a * b).sum(dims)
    total = a.sum(dims) + b.sum(dims)
    dice = (2 * inter + eps) / (total + eps)
    return 1 - dice.mean()


# the similarities by the name the command line and the configs use (`--loss mse|ncc|mi`)
SIMILARITIES = {"mse": mse_loss, "ncc": ncc_loss, "mi": mi_loss}


def similarity_loss(name: str, a: Tensor, b: Tensor, mask: Tensor | None = None) -> Tensor:
    """The similarity loss called ``name`` (one of :data:`SIMILARITIES`) of ``a`` and ``b`` (over ``mask``)."""
    if name not in SIMILARITIES:
        raise ValueError(f"loss must be one of {', '.join(SIMILARITIES)}, got {name!r}")
    return SIMILARITIES[name](a, b, mask=mask)
