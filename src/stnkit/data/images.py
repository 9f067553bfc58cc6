"""Image files for a model: a PNG read as grey levels, fitted to a model's input canvas (``stnkit predict``)."""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import check_int
from .idx import DatasetError

# an image for a model: a digit needs a few pixels, and more than this per side is no digit
# (refused from the header, before the pixels are decoded)
MIN_SIDE, MAX_SIDE = 4, 4096
# grey, palette and RGB(A) images; other modes (CMYK, YCbCr, LAB, HSV, multi-band) are refused
GREY_OR_RGB_MODES = frozenset({"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "I", "I;16", "F"})


class ImageFileError(DatasetError):
    """An image file that is not a readable grey or RGB image of a usable size."""


def read_grey_png(path: str | os.PathLike) -> np.ndarray:
    """An image file (PNG or any format Pillow reads) as ``(H, W)`` float32 grey levels in ``[0, 1]``.

    Colour images are converted to luminance (Pillow's ``"L"`` mode). Needs Pillow (``stnkit[train]``).

    Raises:
        ImageFileError: not an image Pillow reads (corrupt or truncated), a side
            outside ``[MIN_SIDE, MAX_SIDE]`` pixels, or channels other than grey,
            palette or RGB(A) (e.g. CMYK).
        FileNotFoundError: no such file.
    """
    from PIL import Image

    if os.path.isdir(path):
        raise ImageFileError(f"{path} is a directory, not an image file")
    try:
        with Image.open(path) as im:
            w, h = im.size
            if not (MIN_SIDE <= w <= MAX_SIDE and MIN_SIDE <= h <= MAX_SIDE):
                raise ImageFileError(
                    f"{path}: image is {w}x{h} pixels; each side must be {MIN_SIDE} to {MAX_SIDE} pixels"
                )
            if im.mode not in GREY_OR_RGB_MODES:
                raise ImageFileError(
                    f"{path}: image has {len(im.getbands())} channels in mode {im.mode}; a grey or RGB(A) image is needed"
                )
            return np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    except (OSError, SyntaxError, EOFError, ValueError, Image.DecompressionBombError) as err:
        if isinstance(err, (ImageFileError, FileNotFoundError, PermissionError)):
            raise
        raise ImageFileError(f"{path} is not a readable image (corrupt, truncated or not an image file)") from None


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
