"""Pictures without dependencies: a PNG writer, image montages, and a transformer's before/after grid.

numpy and torch only (no matplotlib): :func:`transformer_outputs_grid` makes a
``uint8`` ``(3, H, W)`` tensor for TensorBoard's ``add_image``.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ._checks import check_image, check_int
from ._io import atomic_write_bytes


def save_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write an (H, W) grey or (H, W, 3) RGB image, uint8 or float in [0, 1], as PNG."""
    img = np.asarray(image)
    if img.dtype != np.uint8:
        img = (np.clip(img.astype(np.float64), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if img.ndim == 2:
        color = 0
    elif img.ndim == 3 and img.shape[2] == 3:
        color = 2
    else:
        raise ValueError(f"image must have shape (H, W) or (H, W, 3), got {img.shape}")
    h, w = img.shape[:2]
    raw = b"".join(b"\x00" + img[i].tobytes() for i in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, png)
    return path


def montage(images: np.ndarray, ncols: int | None = None, pad: int = 2, value: float = 0.5) -> np.ndarray:
    """Tile (N, H, W) or (N, H, W, 3) images into one grid image with ``pad`` pixels between."""
    images = np.asarray(images, dtype=np.float64)
    if images.ndim not in (3, 4) or images.shape[0] == 0:
        raise ValueError(f"images must have shape (N, H, W) or (N, H, W, 3) with N > 0, got {images.shape}")
    n, h, w = images.shape[:3]
    ncols = ncols or int(np.ceil(np.sqrt(n)))
    nrows = int(np.ceil(n / ncols))
    shape = (nrows * (h + pad) + pad, ncols * (w + pad) + pad) + images.shape[3:]
    out = np.full(shape, value, dtype=np.float64)
    for k in range(n):
        r, c = divmod(k, ncols)
        out[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w] = images[k]
    return out


def _transformer_outputs(model: nn.Module, x: Tensor) -> list[Tensor]:
    """The transformer's outputs for ``x``: one ``(B, C, H', W')`` per (parallel) transformer."""
    from .nn import InverseCompositionalTransformer, ParallelTransformers, SeriesTransformers, SpatialTransformer

    if hasattr(model, "warp_input"):  # an ST classifier (stnkit.models.STClassifier)
        out, _ = model.warp_input(x)
        transformer = model.transformer
    elif isinstance(
        model, (SpatialTransformer, ParallelTransformers, SeriesTransformers, InverseCompositionalTransformer)
    ):
        out, transformer = model(x), model
    else:
        raise TypeError(
            "model must be a spatial transformer (stnkit.nn) or a model with warp_input (stnkit.models.STClassifier), "
            f"got {type(model).__name__}"
        )
    if isinstance(transformer, ParallelTransformers):
        return list(out.split(x.shape[1], dim=1))
    return [out]


def transformer_outputs_grid(
    model: nn.Module,
    images: Tensor,
    n: int = 8,
    denormalize=None,
    pad: int = 2,
) -> Tensor:
    """A picture of what the transformer does: ``n`` inputs in the first row, its outputs below.

    One row per (parallel) transformer follows the inputs; outputs of another
    size than the input are centred in cells of the larger size. The model runs
    in eval mode without gradients (its mode is restored). Suitable for
    ``SummaryWriter.add_image(tag, grid)`` (``CHW``).

    Args:
        model: a :class:`~stnkit.nn.SpatialTransformer` (or a parallel, series
            or inverse compositional one), or a model with ``warp_input`` such as
            :class:`~stnkit.models.STClassifier`.
        images: ``(B, C, H, W)``, ``C`` 1 (grey) or 3 (RGB), in ``[0, 1]`` or
            normalised (then pass ``denormalize``); the first ``n`` are shown.
        n: the number of images (at most ``B`` are shown).
        denormalize: ``None``, or a callable mapping an image batch ``(B, C, H, W)``
            back to ``[0, 1]`` (applied to the inputs and to the outputs).
        pad: pixels between the cells (mid grey).

    Returns:
        a ``uint8`` tensor ``(3, rows * (H + pad) + pad, n * (W + pad) + pad)``
        on the CPU; values outside ``[0, 1]`` after ``denormalize`` are clipped.

    Example:
        >>> from stnkit.nn import SpatialTransformer
        >>> st = SpatialTransformer(transform="affine", in_channels=1, in_size=12)
        >>> grid = transformer_outputs_grid(st, torch.rand(5, 1, 12, 12), n=4)
        >>> grid.shape, grid.dtype
        (torch.Size([3, 30, 58]), torch.uint8)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    images = check_image("images", images)
    if images.shape[1] not in (1, 3):
        raise ValueError(f"images must have 1 (grey) or 3 (RGB) channels, got {images.shape[1]} channels")
    check_int("n", n)
    check_int("pad", pad, low=0)
    if denormalize is not None and not callable(denormalize):
        raise TypeError(f"denormalize must be a callable or None, got {type(denormalize).__name__}")
    x = images[:n]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            outputs = _transformer_outputs(model, x)
    finally:
        model.train(was_training)
    rows = [x, *outputs]
    if denormalize is not None:
        rows = [denormalize(r) for r in rows]
    h = max(r.shape[-2] for r in rows)
    w = max(r.shape[-1] for r in rows)
    k = x.shape[0]
    canvas = torch.full((3, len(rows) * (h + pad) + pad, k * (w + pad) + pad), 0.5, dtype=torch.float64)
    for i, row in enumerate(rows):
        row = row.detach().to("cpu", torch.float64).clamp(0.0, 1.0).expand(-1, 3, -1, -1)
        rh, rw = row.shape[-2:]
        top = pad + i * (h + pad) + (h - rh) // 2
        for j in range(k):
            left = pad + j * (w + pad) + (w - rw) // 2
            canvas[:, top : top + rh, left : left + rw] = row[j]
    return (canvas * 255.0).round().to(torch.uint8)
