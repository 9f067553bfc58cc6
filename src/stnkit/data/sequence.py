"""``sequence``: three digits side by side on a cluttered 100x100 canvas (Sonderby et al. 2015).

The recurrent spatial transformer paper (Sonderby, Sonderby, Maaloe and Winther,
"Recurrent Spatial Transformer Networks", arXiv 1509.05329) classifies the three
digits of cluttered MNIST sequences: three digits side by side on a 100x100 canvas
with a random offset and slope, plus 8 clutter patches of 9x9 pixels. The paper
gives no more detail than that; this is our recipe (all positions are integers,
so every digit is copied exactly, never resampled):

* sample ``i`` shows source digit ``i`` first, then two other source digits drawn
  uniformly (all three distinct); its labels are their labels in that order;
* the three 28x28 frames sit side by side, 28 pixels apart, the first frame's
  left edge uniform in ``[0, 100 - 84]`` pixels;
* the slope ``a`` is uniform in ``[-max_slope, max_slope]`` (rise per digit width,
  0.3 by default); frame ``k``'s top edge is ``y1 + round(a * 28) * (k - 1)``, the
  middle frame's ``y1`` uniform among the positions that keep all three frames
  on the canvas;
* the digits are combined by pixel-wise maximum, then ``n_clutter`` patches of
  ``patch_size x patch_size`` pixels, each cut at a uniform position from a
  uniform source digit other than the sample's three, are pasted at uniform
  positions (maximum), as in the ``tc`` recipe
  (:func:`~stnkit.data.distortions.draw_clutter`).

The ground truth of digit ``k`` is its frame, ``boxes[i, k] = (x0, y0, x1, y1)``
in canvas pixels (``x1 = x0 + 28``, exclusive): all of digit ``k``'s ink lies in it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import check_int, check_number
from .dataset import RedrawnDataset, as_digits, as_labels
from .distortions import DIGIT_SIZE, draw_clutter, draw_excluding, paste_clutter, paste_max

SEQUENCE_LENGTH = 3
SEQUENCE_CANVAS = 100


def draw_sequence(
    n: int,
    pool_size: int,
    generator: torch.Generator,
    *,
    canvas_size: int = SEQUENCE_CANVAS,
    max_slope: float = 0.3,
    n_clutter: int = 8,
    patch_size: int = 9,
) -> dict[str, Tensor]:
    """The random part of ``n`` sequences built from ``pool_size`` source digits, in a fixed order.

    Returns ``index`` ``(n, 3)`` (the source digits, ``index[:, 0] = arange(n)``),
    ``boxes`` ``(n, 3, 4)`` (each digit's frame, ``x0, y0, x1, y1`` pixels) and the
    clutter of :func:`~stnkit.data.distortions.draw_clutter`.
    """
    k = SEQUENCE_LENGTH
    if pool_size < k + 1:
        raise ValueError(f"sequence needs at least {k + 1} source digits (3 per sample and clutter), got {pool_size}")
    index = torch.arange(n)[:, None]
    for _ in range(k - 1):  # each further digit differs from the ones drawn before
        index = torch.cat([index, draw_excluding(pool_size, index, (n, 1), generator)], dim=1)
    x0 = torch.randint(0, canvas_size - k * DIGIT_SIZE + 1, (n,), generator=generator)
    slope = (2.0 * torch.rand(n, generator=generator, dtype=torch.float64) - 1.0) * max_slope
    rise = torch.round(slope * DIGIT_SIZE).long()  # pixels per digit
    # the middle frame's top edge: the outer frames (y1 -/+ rise) stay on the canvas
    low, high = rise.abs(), canvas_size - DIGIT_SIZE - rise.abs()
    y1 = low + (torch.rand(n, generator=generator, dtype=torch.float64) * (high - low + 1)).long().clamp(max=high - low)
    steps = torch.arange(k) - (k // 2)
    xs = x0[:, None] + DIGIT_SIZE * torch.arange(k)
    ys = y1[:, None] + rise[:, None] * steps
    boxes = torch.stack([xs, ys, xs + DIGIT_SIZE, ys + DIGIT_SIZE], dim=2)
    clutter = draw_clutter(n, n_clutter, patch_size, canvas_size, pool_size, index, generator)
    return {"index": index, "boxes": boxes, **clutter}


def render_sequence(pool: Tensor, draw: dict[str, Tensor], canvas_size: int, patch_size: int) -> Tensor:
    """Canvases ``(n, 1, S, S)`` from source digits ``pool`` ``(P, 1, 28, 28)`` and a :func:`draw_sequence`."""
    n = draw["index"].shape[0]
    out = torch.zeros((n, 1, canvas_size, canvas_size), dtype=torch.float32)
    out = paste_max(out, pool[draw["index"], 0], draw["boxes"][..., :2])
    return paste_clutter(out, pool, draw, patch_size)


class SequenceMNIST(RedrawnDataset):
    """Cluttered sequences of three digits (the ``sequence`` dataset), with each digit's box.

    Args:
        images: ``(N, 28, 28)`` or ``(N, 1, 28, 28)`` source digits (uint8 or float
            in ``[0, 1]``), ``N >= 4``; sample ``i`` starts with digit ``i``.
        labels: ``(N,)`` integer labels.
        seed: the seed of the draw (an int >= 0).
        fresh: ``True`` re-draws everything (the other two digits, positions,
            clutter) at each :meth:`set_epoch` from :func:`~stnkit.data.stream_seed`.
        max_slope, n_clutter, patch_size: the recipe's options (module docstring).

    ``ds[i]`` is ``(image, labels)``: float32 ``(1, 100, 100)`` and int64 ``(3,)``.
    The current draw is ``ds.images`` ``(N, 1, 100, 100)``, ``ds.labels`` ``(N, 3)``,
    ``ds.boxes`` ``(N, 3, 4)`` (``x0, y0, x1, y1`` pixels, digit ``k`` inside box ``k``)
    and ``ds.index`` ``(N, 3)`` (which source digits).

    Example:
        >>> from stnkit.data import load_digits
        >>> images, labels = load_digits("test")
        >>> ds = SequenceMNIST(images[:8], labels[:8], seed=0)
        >>> x, y = ds[0]
        >>> tuple(x.shape), tuple(y.shape), tuple(ds.boxes.shape)
        ((1, 100, 100), (3,), (8, 3, 4))
    """

    canvas_size = SEQUENCE_CANVAS

    def __init__(
        self,
        images: object,
        labels: object,
        seed: int = 0,
        fresh: bool = False,
        *,
        max_slope: float = 0.3,
        n_clutter: int = 8,
        patch_size: int = 9,
    ):
        self.digits = as_digits(images)
        self.source_labels = as_labels(labels, self.digits.shape[0])
        if self.digits.shape[0] < SEQUENCE_LENGTH + 1:
            raise ValueError(f"images must hold at least {SEQUENCE_LENGTH + 1} digits, got {self.digits.shape[0]}")
        self._init_draws(seed, fresh)
        max_room = (SEQUENCE_CANVAS - DIGIT_SIZE) / (2 * DIGIT_SIZE)
        self.options = {
            "max_slope": check_number("max_slope", max_slope, low=0.0, high=max_room),
            "n_clutter": check_int("n_clutter", n_clutter, low=0, high=1000),
            "patch_size": check_int("patch_size", patch_size, low=1, high=DIGIT_SIZE),
        }
        self.images: Tensor
        self.labels: Tensor
        self.boxes: Tensor
        self.index: Tensor
        self._redraw(0 if fresh else None)

    def __repr__(self) -> str:
        return f"SequenceMNIST(n={len(self)}, seed={self.seed}, fresh={self.fresh}, epoch={self.epoch})"

    def _redraw(self, epoch: int | None) -> None:
        draw = draw_sequence(len(self), self.digits.shape[0], self._generator(epoch), **self.options)
        self.images = render_sequence(self.digits, draw, SEQUENCE_CANVAS, self.options["patch_size"])
        self.index, self.boxes = draw["index"], draw["boxes"]
        self.labels = self.source_labels[self.index]
        self.epoch = epoch


__all__ = ["SEQUENCE_CANVAS", "SEQUENCE_LENGTH", "SequenceMNIST", "draw_sequence", "render_sequence"]
