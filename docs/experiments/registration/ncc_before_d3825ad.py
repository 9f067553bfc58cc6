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


def mse_loss(a: Tensor, b: Tensor) -> Tensor:
    """Mean squared difference of ``a`` and ``b``."""
    a, b = _pair(a, b)
    return (a - b).pow(2).mean()


def _box_mean(x: Tensor, window: int) -> Tensor:
    """The mean of ``x`` in a ``window``-wide cube around each point (zero padding counted as samples)."""
    dims = x.ndim - 2
    pool = F.avg_pool2d if dims == 2 else F.avg_pool3d
    return pool(x, window, stride=1, padding=window // 2, count_include_pad=True)


def ncc_loss(a: Tensor, b: Tensor, window: int = 9, eps: float = 1e-5) -> Tensor:
    """Minus the local normalised cross-correlation of ``a`` and ``b`` in ``window``-wide windows (odd).

    Per window: ``cov(a, b)^2 / (var(a) var(b) + eps)``, as VoxelMorph's NCC (a squared correlation, so it is
    in [0, 1]), averaged over points, channels and batch. The windows at the border see zero padding, as a
    convolution's do: ``-1`` when ``b`` is a multiple of ``a`` (any sign), and for ``b = k a + c`` in the
    windows that lie inside; windows without contrast contribute 0.
    """
    a, b = _pair(a, b)
    window = check_int("window", window, low=1, high=255)
    if window % 2 == 0:
        raise ValueError(f"window must be odd, got {window}")
    eps = check_number("eps", eps, low=0.0)
    ma, mb = _box_mean(a, window), _box_mean(b, window)
    cov = _box_mean(a * b, window) - ma * mb
    va = (_box_mean(a * a, window) - ma * ma).clamp_min(0)
    vb = (_box_mean(b * b, window) - mb * mb).clamp_min(0)
    cc = cov * cov / (va * vb + eps)
    return -cc.mean()


def mi_loss(a: Tensor, b: Tensor, bins: int = 32, sigma: float | None = None) -> Tensor:
    """Minus the mutual information (nats) of ``a`` and ``b``, from a Parzen joint histogram.

    Intensities are rescaled to [0, 1] per image (over all its channels and points), then each sample is
    spread over ``bins`` bin centres with a Gaussian of width ``sigma`` (default: one bin width). Each image
    of the batch gets its own histogram; the result is the mean of the batch's ``-MI``.
    """
    a, b = _pair(a, b)
    bins = check_int("bins", bins, low=2, high=256)
    if sigma is None:
        sigma = 1.0 / (bins - 1)
    sigma = check_number("sigma", sigma, low=1e-6)
    n = a.shape[0]

    def unit(x: Tensor) -> Tensor:
        x = x.reshape(n, -1)
        lo = x.amin(1, keepdim=True)
        hi = x.amax(1, keepdim=True)
        return (x - lo) / (hi - lo).clamp_min(1e-12)

    ua, ub = unit(a), unit(b)
    centres = torch.linspace(0, 1, bins, dtype=ua.dtype, device=ua.device)
    wa = torch.exp(-0.5 * ((ua[..., None] - centres) / sigma) ** 2)  # (B, N, bins)
    wb = torch.exp(-0.5 * ((ub[..., None] - centres) / sigma) ** 2)
    wa = wa / wa.sum(-1, keepdim=True).clamp_min(1e-12)
    wb = wb / wb.sum(-1, keepdim=True).clamp_min(1e-12)
    joint = torch.bmm(wa.transpose(1, 2), wb) / ua.shape[1]  # (B, bins, bins), sums to 1
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


def similarity_loss(name: str, a: Tensor, b: Tensor) -> Tensor:
    """The similarity loss called ``name`` (one of :data:`SIMILARITIES`) of ``a`` and ``b``."""
    if name not in SIMILARITIES:
        raise ValueError(f"loss must be one of {', '.join(SIMILARITIES)}, got {name!r}")
    return SIMILARITIES[name](a, b)
