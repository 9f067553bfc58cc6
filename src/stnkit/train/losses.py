"""The losses and the per-epoch seeds of training: classification, transformation consistency, and
the homography task's corner regression and photometric loss (each task's objective, the loss a
model trains with and what it logs: :mod:`.objectives`)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import check_int
from ..data import offsets_to_params
from ..geometry import warp
from ..models import STClassifier, transformer_families

# the streams of one training epoch, each a function of (seed, epoch) only (epoch_seed)
_EPOCH_STREAMS = {"shuffle": 1, "steps": 2}
# added to a patch's standard deviation (grey levels in [0, 1]) before the standardised photometric loss
_STD_FLOOR = 1e-3


def epoch_seed(seed: int, epoch: int, stream: str) -> int:
    """The seed of one training epoch's ``stream``: ``"shuffle"`` (the order of the
    training digits) or ``"steps"`` (the global torch RNG the steps draw from: dropout,
    the consistency loss's distortions).

    A function of ``(seed, epoch)`` only, like the epoch's distortions
    (:func:`~stnkit.data.stream_seed`): a run resumed from the checkpoint at the end of
    epoch ``e - 1`` trains epoch ``e`` with the very numbers of an uninterrupted run.
    """
    state = np.random.SeedSequence([seed, epoch, _EPOCH_STREAMS[stream]]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])  # < 2**63


def consistency_loss(model: STClassifier, x: Tensor, distortion: Tensor, out: Tensor | None = None) -> Tensor:
    """Transformation-consistency loss: the transformer's outputs for ``x`` and for
    ``x`` warped by ``distortion`` (parameters of the first transformer's family)
    should agree, since both show the same digit in its canonical pose.

    Returns the mean squared difference of the two outputs: zero when
    ``distortion`` is the identity, positive otherwise (for a transformer that
    has not learned to undo the distortion).
    """
    family = transformer_families(model)[0]
    if out is None:
        out, _ = model.warp_input(x)
    x_distorted = warp(x, distortion, family)
    out_distorted, _ = model.warp_input(x_distorted)
    return F.mse_loss(out_distorted, out)


def classification_loss(logits: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
    """Cross-entropy, error (%) and, for several labels per sample, sequence error (%).

    ``logits`` ``(N, C)`` with ``y`` ``(N,)``; or ``(N, K, C)`` with ``y`` ``(N, K)`` for
    ``K`` labels per sample (a digit sequence): the loss is the mean over the ``N * K``
    labels, the error is per label, the sequence error counts a sample wrong when any of
    its labels is.
    """
    if logits.ndim == 3:
        wrong = logits.argmax(2) != y
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        return loss, wrong.float().mean() * 100.0, wrong.any(1).float().mean() * 100.0
    return F.cross_entropy(logits, y), (logits.argmax(1) != y).float().mean() * 100.0, None


def mean_corner_error(offsets: Tensor, y: Tensor) -> Tensor:
    """The mean over samples and the four corners of the distance (px) between predicted and true
    corners: ``offsets`` and ``y`` ``(N, 8)``, ``(dx, dy)`` per corner."""
    return (offsets - y).view(-1, 4, 2).norm(dim=2).mean()


def corner_loss(offsets: Tensor, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, None]:
    """The supervised homography loss: half the mean squared error of the corner offsets (px^2, as
    DeTone et al. 2016's Euclidean loss), and the mean corner error (px)."""
    return 0.5 * F.mse_loss(offsets, y), mean_corner_error(offsets.detach(), y), None


def photometric_loss(
    offsets: Tensor, x: Tensor, y: Tensor, levels: int = 1, standardize: bool = False
) -> tuple[Tensor, Tensor, None]:
    """The unsupervised homography loss (Nguyen et al. 2018): the mean absolute difference between
    ``P_A`` (``x[:, 0]``) warped by the predicted homography and ``P_B`` (``x[:, 1]``), over the
    pixels whose sampling point falls inside ``P_A``. The labels ``y`` only give the error (px), never
    the loss.

    ``levels > 1``: the mean of that difference over a pyramid of ``levels`` levels, the warped
    ``P_A``, ``P_B`` and the inside mask average-pooled by 2 from one level to the next (a pooled
    pixel counts when all its pixels are inside): coarse levels compare blurred patches, whose
    difference still slopes towards the truth when the corners are tens of pixels off.

    ``standardize``: each patch first standardised (its own mean and standard deviation), so that a
    low-contrast pair weighs in the loss as much as a high-contrast one.
    """
    check_int("levels", levels)
    if standardize:
        x = (x - x.mean(dim=(-2, -1), keepdim=True)) / (x.std(dim=(-2, -1), keepdim=True) + _STD_FLOOR)
    pa, pb = x[:, :1], x[:, 1:2]
    params = offsets_to_params(offsets, size=x.shape[-1])
    warped = warp(pa, params, "projective")
    with torch.no_grad():
        inside = (warp(torch.ones_like(pa), params, "projective") > 0.999).to(x.dtype)
    total = 0.0
    for level in range(levels):
        if level:
            if min(warped.shape[-2:]) < 2:
                raise ValueError(
                    f"levels must leave at least 1 pixel of the {tuple(x.shape[-2:])} patches, got {levels}"
                )
            warped, pb = F.avg_pool2d(warped, 2), F.avg_pool2d(pb, 2)
            inside = (F.avg_pool2d(inside, 2) > 0.999).to(x.dtype)
        diff = (warped - pb).abs() * inside
        total = total + diff.sum() / inside.sum().clamp_min(1)
    return total / levels, mean_corner_error(offsets.detach(), y), None
