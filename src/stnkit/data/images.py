"""Image files for a model: a PNG read as grey levels, fitted to a model's input canvas (``stnkit predict``)."""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import check_int


def read_grey_png(path: str | os.PathLike) -> np.ndarray:
    """An image file (PNG or any format Pillow reads) as ``(H, W)`` float32 grey levels in ``[0, 1]``.

    Colour images are converted to luminance (Pillow's ``"L"`` mode). Needs Pillow (``stnkit[train]``).
    """
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("L"), dtype=np.float32) / 255.0


def fit_to_canvas(image: np.ndarray | Tensor, canvas: int, *, invert: bool = False) -> Tensor:
    """A ``(1, 1, canvas, canvas)`` float batch of one ``(H, W)`` grey image in ``[0, 1]``, ready for a model.

    ``invert`` turns a dark digit on a light background into the white-on-black
    digits the models are trained on (``1 - x``). An image of another size is
    resized (bilinear, antialiased, ``align_corners=False``); one of the right size
    is kept as it is.

    >>> fit_to_canvas(np.zeros((28, 28), np.float32), 42, invert=True).shape
    torch.Size([1, 1, 42, 42])
    """
    canvas = check_int("canvas", canvas)
    x = torch.as_tensor(image, dtype=torch.float32)
    if x.ndim != 2:
        raise ValueError(f"image must have shape (H, W), got shape {tuple(x.shape)}")
    x = x[None, None]
    if invert:
        x = 1.0 - x
    if tuple(x.shape[-2:]) != (canvas, canvas):
        x = F.interpolate(x, size=(canvas, canvas), mode="bilinear", align_corners=False, antialias=True)
    return x
