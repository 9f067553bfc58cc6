"""Pictures without dependencies: a PNG writer and image montages (numpy only)."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np

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
