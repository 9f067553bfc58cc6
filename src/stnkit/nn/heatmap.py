"""A translation-equivariant localisation net: conv heatmaps, a spatial softmax, soft-argmax centres.

A localisation net that ends in global pooling or a fully connected layer over a
coarse grid can lose *where* things are; this one cannot: a fully convolutional
trunk scores every position, a spatial softmax turns each score map into a
distribution, and its mean (the soft-argmax) is a window centre in the
normalised frame of :mod:`stnkit.geometry` (``[-1, 1]``, x before y, pixel
centres at ``align_corners=False``). Shifting the input shifts the heatmaps and
so the centres (away from the borders). The score layer starts at zero, so every
heatmap starts uniform and every centre at the middle of the image, an
identity-like start for an attention window.

:class:`HeatmapLocalization` outputs ``(B, 2 k)``: the ``k`` centres
``(x, y)``; :func:`soft_argmax_2d` is the differentiable core. With ``evidence_classes=n`` it also
scores ``n`` classes at every position (a 1x1 conv) and pools those scores with each heatmap
(:attr:`HeatmapLocalization.pooled_evidence`, ``(B, k, n)``): a cross-entropy on them trains each
heatmap to weigh the positions whose evidence tells its class (attention pooling, as in
multiple-instance learning), a direct signal for *where* that a window's crop alone gives only once
it already overlaps the object.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_float_tensor, check_int, check_number


def soft_argmax_2d(scores: Tensor, temperature: float = 1.0) -> tuple[Tensor, Tensor]:
    """The spatial softmax of ``scores`` ``(B, K, H, W)`` and its mean position ``(B, K, 2)`` (x, y, normalised).

    Positions are the pixel centres at ``align_corners=False``: ``(2 j + 1) / W - 1``. Returns
    ``(centres, probabilities)`` (the probabilities ``(B, K, H, W)`` sum to 1 over each map).

    Example:
        >>> c, p = soft_argmax_2d(torch.zeros(1, 1, 4, 4))  # uniform: the middle
        >>> c.abs().max().item() < 1e-6, p.sum().item()
        (True, 1.0)
    """
    scores = check_float_tensor("scores", scores)
    if scores.ndim != 4:
        raise ValueError(f"scores must have shape (B, K, H, W), got {tuple(scores.shape)}")
    t = check_number("temperature", temperature, low=1e-6)
    b, k, h, w = scores.shape
    p = F.softmax(scores.reshape(b, k, h * w) / t, dim=-1).reshape(b, k, h, w)
    xs = (2 * torch.arange(w, dtype=p.dtype, device=p.device) + 1) / w - 1
    ys = (2 * torch.arange(h, dtype=p.dtype, device=p.device) + 1) / h - 1
    cx = (p.sum(2) * xs).sum(-1)
    cy = (p.sum(3) * ys).sum(-1)
    return torch.stack([cx, cy], dim=-1), p


class HeatmapLocalization(nn.Module):
    """Conv trunk -> ``k`` score maps -> spatial softmax -> soft-argmax: ``(B, C, H, W)`` to ``(B, 2 k)`` centres.

    The trunk: conv 3x3 (``width``) -> BN -> ReLU -> max-pool 2, then ``depth - 1`` convs 3x3 (``width``,
    dilation 1, 2, 4, ...) -> BN -> ReLU at half resolution (padding keeps the size: translation-equivariant
    away from the borders), then a 1x1 conv to ``k`` score maps, zero-initialised (uniform heatmaps,
    centres ``(0, 0)`` at the start). Any input of 2 px or more a side.

    Args:
        in_channels: the input's channels.
        heatmaps: ``k``, the centres predicted.
        width: the trunk's channels.
        depth: the trunk's conv layers (at least 1).
        temperature: the softmax temperature (smaller: sharper).
        evidence_classes: ``0`` (none), or ``n``: per heatmap a 1x1 conv scores ``n`` classes at every
            position; each forward then sets :attr:`pooled_evidence` ``(B, k, n)``, the scores averaged
            under the heatmap.

    ``forward`` returns ``(B, 2 k)`` ``(x_0, y_0, x_1, y_1, ...)``; :meth:`heatmaps` the ``(B, k, H/2, W/2)``
    probabilities.

    Example:
        >>> loc = HeatmapLocalization(3, heatmaps=2)
        >>> loc(torch.rand(2, 3, 32, 32))  # uniform heatmaps at the start: the middle
        tensor([[0., 0., 0., 0.],
                [0., 0., 0., 0.]], grad_fn=<ViewBackward0>)
    """

    def __init__(
        self,
        in_channels: int,
        heatmaps: int = 1,
        width: int = 16,
        depth: int = 3,
        temperature: float = 1.0,
        evidence_classes: int = 0,
    ):
        super().__init__()
        c = check_int("in_channels", in_channels)
        w = check_int("width", width)
        self.k = check_int("heatmaps", heatmaps)
        d = check_int("depth", depth)
        self.temperature = check_number("temperature", temperature, low=1e-6)
        layers: list[nn.Module] = [
            nn.Conv2d(c, w, 3, padding=1, bias=False),
            nn.BatchNorm2d(w),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        ]
        for i in range(d - 1):
            dil = 2**i
            layers += [nn.Conv2d(w, w, 3, padding=dil, dilation=dil, bias=False), nn.BatchNorm2d(w), nn.ReLU(True)]
        self.trunk = nn.Sequential(*layers)
        self.score = nn.Conv2d(w, self.k, 1)
        nn.init.zeros_(self.score.weight)
        nn.init.zeros_(self.score.bias)
        self.evidence_classes = check_int("evidence_classes", evidence_classes, low=0)
        self.evidence = nn.Conv2d(w, self.k * self.evidence_classes, 1) if self.evidence_classes else None
        self.pooled_evidence: Tensor | None = None

    def scores(self, x: Tensor) -> Tensor:
        """The score maps ``(B, k, H/2, W/2)`` before the softmax."""
        return self.score(self.trunk(x))

    def heatmaps(self, x: Tensor) -> Tensor:
        """The spatial-softmax probabilities ``(B, k, H/2, W/2)``."""
        return soft_argmax_2d(self.scores(x), self.temperature)[1]

    def forward(self, x: Tensor) -> Tensor:
        feats = self.trunk(x)
        centres, p = soft_argmax_2d(self.score(feats), self.temperature)
        if self.evidence is not None:
            b, _, h, w = feats.shape
            z = self.evidence(feats).reshape(b, self.k, self.evidence_classes, h * w)
            self.pooled_evidence = (z * p.reshape(b, self.k, 1, h * w)).sum(-1)
        return centres.reshape(x.shape[0], 2 * self.k)


__all__ = ["HeatmapLocalization", "soft_argmax_2d"]
