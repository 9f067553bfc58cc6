"""Image files for a model: a PNG read as grey levels, fitted to a model's input canvas (``stnkit predict``)."""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import check_choice, check_int
from .folder import PNG_SIGNATURE, read_image
from .idx import ImageFileError, open_regular

# an image for a model: a digit needs a few pixels, and more than this per side is no digit
# (refused from the header, before the pixels are decoded)
MIN_SIDE, MAX_SIDE = 4, 4096
# grey, palette and RGB(A) images; other modes (CMYK, YCbCr, LAB, HSV, multi-band) are refused
GREY_OR_RGB_MODES = frozenset({"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "I", "I;16", "F"})


BACKGROUNDS = {"black": 0.0, "white": 1.0}


def read_grey_png(path: str | os.PathLike, background: str = "black") -> np.ndarray:
    """An image file (PNG or any format Pillow reads) as ``(H, W)`` float32 grey levels in ``[0, 1]``.

    Colour images are converted to luminance (Pillow's ``"L"`` mode). A 16-bit grey PNG keeps
    its 16 bits (``value / 65535``, :func:`~stnkit.data.folder.read_image`). Transparency (an alpha
    channel, a palette's or ``tRNS`` transparency) is composited onto ``background``: ``"black"``
    (the default: the white-on-black digits the models are trained on) or ``"white"`` (a dark
    digit on paper, as ``stnkit predict --invert`` reads it): ``grey * a + background * (1 - a)``.
    Opaque images read as before. Only a regular file is opened (a FIFO or a device is refused,
    never read). Needs Pillow (``stnkit[train]``).

    Raises:
        ImageFileError: not a regular file, not an image Pillow reads (corrupt or
            truncated), a side outside ``[MIN_SIDE, MAX_SIDE]`` pixels, channels other
            than grey, palette or RGB(A) (e.g. CMYK), or an image whose only content
            is transparency drawn in ink of the background's colour (it would read as
            uniform: the message says which ``background`` shows it).
        ValueError: ``background`` is neither ``"black"`` nor ``"white"``.
        FileNotFoundError: no such file.
    """
    from PIL import Image

    check_choice("background", background, tuple(BACKGROUNDS))
    try:
        with open_regular(path, "an image file") as f:
            sixteen = f.read(8) == PNG_SIGNATURE and _png_is_16_bit_grey(f)
            f.seek(0)
            with Image.open(f) as im:
                w, h = im.size
                if not (MIN_SIDE <= w <= MAX_SIDE and MIN_SIDE <= h <= MAX_SIDE):
                    raise ImageFileError(
                        f"{path}: image is {w}x{h} pixels; each side must be {MIN_SIDE} to {MAX_SIDE} pixels"
                    )
                if im.mode not in GREY_OR_RGB_MODES:
                    raise ImageFileError(
                        f"{path}: image has {len(im.getbands())} channels in mode {im.mode}; "
                        "a grey or RGB(A) image is needed"
                    )
                if sixteen and "transparency" not in im.info:  # 16 bits kept, as the folder route reads it
                    return read_image(path, max_pixels=MAX_SIDE * MAX_SIDE)[0].numpy()
                if im.mode in ("LA", "La", "PA", "RGBA", "RGBa") or "transparency" in im.info:
                    return _composite(im, BACKGROUNDS[background], background, path)
                return np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    except (OSError, SyntaxError, EOFError, ValueError, Image.DecompressionBombError) as err:
        if isinstance(err, (ImageFileError, FileNotFoundError, PermissionError)):
            raise
        raise ImageFileError(f"{path} is not a readable image (corrupt, truncated or not an image file)") from None


def _png_is_16_bit_grey(f) -> bool:
    """After the signature: the IHDR says grey (colour type 0) in 16 bits."""
    data = f.read(25)
    return len(data) == 25 and data[4:8] == b"IHDR" and data[16] == 16 and data[17] == 0


def _composite(im, bg: float, background: str, path) -> np.ndarray:
    rgba = im.convert("RGBA")  # palettes and tRNS transparency too
    grey = np.asarray(rgba.convert("L"), dtype=np.float32) / 255.0  # the luminance, alpha ignored
    alpha = np.asarray(rgba.getchannel("A"), dtype=np.float32) / 255.0
    out = grey * alpha + np.float32(bg) * (1.0 - alpha)
    if np.ptp(out) < 1 / 255 and np.ptp(alpha) >= 1 / 255:  # all its content is in the alpha channel
        other = "white" if background == "black" else "black"
        raise ImageFileError(
            f"{path}: the image is drawn only in its transparency, in ink of the background's colour "
            f"({background}): on a {background} background it reads as uniform; read it on {other} "
            f"(background={other!r}{', stnkit predict --invert' if other == 'white' else ''})"
        )
    return out.astype(np.float32)


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
