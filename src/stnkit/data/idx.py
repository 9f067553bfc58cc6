"""IDX files (the MNIST format), plain or gzip, read and written with validation."""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from .._io import atomic_write_bytes

# The magic numbers of MNIST's files: 0x0000 then the type code (0x08, unsigned bytes) then
# the number of dimensions: 3 for the images (N, 28, 28), 1 for the labels (N,).
IMAGES_MAGIC = 0x00000803  # 2051
LABELS_MAGIC = 0x00000801  # 2049

# IDX type codes -> numpy dtypes (big-endian on disk)
_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_CODES = {np.dtype(v).newbyteorder("=").str.lstrip("<>|="): k for k, v in _DTYPES.items()}


class IdxError(ValueError):
    """A file that is not a valid IDX file (truncated, corrupt, wrong kind)."""


def _open(path: Path):
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gz else open(path, "rb")


def read_idx(path: str | os.PathLike, expect_magic: int | None = None) -> np.ndarray:
    """Read an IDX file (gzip detected from its content) into a numpy array.

    Args:
        path: the file.
        expect_magic: the magic number it must have (:data:`IMAGES_MAGIC` for
            MNIST images, :data:`LABELS_MAGIC` for labels); ``None`` accepts any valid one.

    Raises:
        IdxError: bad magic number, unknown type code, or a length that does not
            match the dimensions in the header (truncated or padded file).
        FileNotFoundError: no such file.
    """
    path = Path(path)
    try:
        with _open(path) as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise IdxError(f"{path}: cannot be read as IDX (corrupt gzip?): {err}") from None
    if len(data) < 4:
        raise IdxError(f"{path}: too short for an IDX header ({len(data)} bytes)")
    zero, code, ndim = struct.unpack(">HBB", data[:4])
    magic = struct.unpack(">I", data[:4])[0]
    if zero != 0 or code not in _DTYPES or ndim == 0:
        raise IdxError(f"{path}: bad IDX magic number 0x{magic:08x}")
    if expect_magic is not None and magic != expect_magic:
        raise IdxError(f"{path}: expected magic number {expect_magic}, got {magic}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxError(f"{path}: truncated header: needs {header} bytes, got {len(data)}")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_DTYPES[code])
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        kind = "truncated" if len(data) < expected else "has trailing bytes"
        raise IdxError(f"{path}: file {kind}: dimensions {dims} need {expected} bytes, got {len(data)}")
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray, compress: bool | None = None) -> Path:
    """Write an array as IDX; gzip when ``compress`` is True or the name ends in ``.gz``.

    Written deterministically (no timestamp in the gzip header), so the same
    array always gives the same bytes.
    """
    path = Path(path)
    array = np.asarray(array)
    key = array.dtype.newbyteorder("=").str.lstrip("<>|=")
    if key not in _CODES:
        raise TypeError(f"array dtype must be one of uint8, int8, int16, int32, float32, float64; got {array.dtype}")
    if array.ndim == 0 or array.ndim > 255:
        raise ValueError(f"array must have 1 to 255 dimensions, got {array.ndim}")
    code = _CODES[key]
    header = struct.pack(">HBB", 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array, dtype=_DTYPES[code]).tobytes()
    if compress is None:
        compress = path.suffix == ".gz"
    if compress:
        payload = gzip.compress(payload, compresslevel=6, mtime=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, payload)
    return path
