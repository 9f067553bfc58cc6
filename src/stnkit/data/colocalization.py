"""Co-localisation data: digits of one class on an 84x84 canvas, with their boxes.

Jaderberg et al. 2015, appendix A.2: each 28x28 digit is placed at a uniform
random position on an 84x84 black canvas (``plain``, the paper's T); the
``cluttered`` set (the paper's TC) adds 16 random 6x6 crops of other MNIST
digits as distractors. One co-localisation problem is a set of images of a
single digit class (the paper: 100 images per class).

The canvases are the ``tc`` recipe of :mod:`stnkit.data.distortions` with
``canvas_size=84`` and ``n_clutter=16`` (``0`` for ``plain``): the digit is
copied exactly at an integer position and the clutter is pasted with ``max``.
Each sample's ground-truth box is the digit's 28x28 frame on the canvas,
``(x0, y0, x1, y1)`` in pixel edges (see :mod:`stnkit.geometry.boxes`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .._checks import check_choice, check_int
from ..geometry import attention_box
from .dataset import as_digits, stream_seed
from .distortions import get_distortion

COLOC_CANVAS = 84
COLOC_CLUTTER = 16
COLOC_PATCH = 6
COLOC_KINDS = ("plain", "cluttered")


class CoLocalization(Dataset):
    """``n`` canvases of digits of class ``digit``, plain or cluttered, with the digits' boxes.

    Args:
        images: ``(N, 28, 28)`` or ``(N, 1, 28, 28)`` digits (uint8 or float in ``[0, 1]``).
        labels: ``(N,)`` integer labels.
        digit: the class whose digits are placed (0-9).
        kind: ``"plain"`` or ``"cluttered"``.
        n: how many digits of the class to use (the first ``n`` of it, from ``start``).
        seed: the seed of the positions and clutter (an int >= 0).
        start: skip the class's first ``start`` digits (a disjoint set from the same split).

    The clutter is cut from all of ``images`` except the sample's own digit.
    ``ds[i]`` is ``(canvas, box)``: float32 ``(1, 84, 84)`` in ``[0, 1]`` and float32
    ``(4,)``. ``ds.images``, ``ds.boxes`` and ``ds.params`` (the ``tc`` recipe's
    ``attention`` ground truth, canvas -> digit) hold the whole set.
    """

    def __init__(
        self,
        images: object,
        labels: object,
        digit: int,
        kind: str = "plain",
        n: int = 100,
        seed: int = 0,
        start: int = 0,
    ):
        digits = as_digits(images)
        if isinstance(labels, np.ndarray):
            labels = torch.from_numpy(labels)
        if not isinstance(labels, Tensor) or labels.is_floating_point() or labels.shape != (digits.shape[0],):
            raise ValueError(f"labels must be an integer array of shape ({digits.shape[0]},)")
        self.digit = check_int("digit", digit, low=0, high=9)
        self.kind = check_choice("kind", kind, COLOC_KINDS)
        check_int("n", n, low=1)
        check_int("start", start, low=0)
        stream_seed(seed, None)  # validates seed
        index = torch.nonzero(labels == digit).flatten()[start : start + n]
        if index.numel() < n:
            raise ValueError(
                f"n must be at most the {index.numel()} digits of class {digit} after start={start}, got {n}"
            )
        self.seed, self.n, self.start = seed, n, start
        self.index = index
        self.digits = digits[index]
        self.distortion = get_distortion(
            "tc",
            canvas_size=COLOC_CANVAS,
            n_clutter=COLOC_CLUTTER if kind == "cluttered" else 0,
            patch_size=COLOC_PATCH,
        )
        # the digit class in the seed, so each class's problem has its own positions
        g = torch.Generator().manual_seed(stream_seed(seed, None) + 10 * start + digit)
        self.images, self.params = self.distortion(self.digits, g, clutter_source=digits, source_index=index)
        self.boxes = digit_boxes(self.params)

    @property
    def canvas_size(self) -> int:
        return COLOC_CANVAS

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.images[i], self.boxes[i]

    def __repr__(self) -> str:
        return (
            f"CoLocalization(digit={self.digit}, kind={self.kind!r}, n={self.n}, seed={self.seed}, start={self.start})"
        )


def digit_boxes(params: Tensor) -> Tensor:
    """The digits' boxes ``(N, 4)`` on the canvas from ``tc`` ground truth (canvas -> digit ``attention``).

    The digit's frame is the window of the inverse transform (digit -> canvas).
    """
    family = get_distortion("tc").family
    # to 1/1000 px: the positions are whole pixels; the float32 ground truth leaves ~1e-6 px of noise
    return attention_box(family.inverse(params.double()), COLOC_CANVAS).round(decimals=3).float()


__all__ = ["COLOC_CANVAS", "COLOC_CLUTTER", "COLOC_KINDS", "COLOC_PATCH", "CoLocalization", "digit_boxes"]
