"""The losses and the per-epoch seeds of training: classification, transformation consistency."""

from __future__ import annotations

import numpy as np
import torch.nn.functional as F
from torch import Tensor

from ..geometry import warp
from ..models import STClassifier, transformer_families

# the streams of one training epoch, each a function of (seed, epoch) only (epoch_seed)
_EPOCH_STREAMS = {"shuffle": 1, "steps": 2}


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
