"""IDX files (the MNIST format), plain or gzip, read and written with validation."""

from __future__ import annotations

import gzip
import math
import os
import stat
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


# the most an IDX file may hold once decompressed (full MNIST: 47 MB; the largest MNIST-like sets,
# EMNIST's 700k digits, 550 MB); a header that declares more is refused before anything is read or
# inflated, so a hostile file (a 7 MB gzip declaring 1.6 GB) cannot exhaust memory
MAX_IDX_BYTES = 1 << 30
# the most any dimension after the first (an image's side) may declare
MAX_IDX_SIDE = 16384
_CHUNK = 1 << 20


class DatasetError(ValueError):
    """A dataset file (IDX, npz, manifest) that is not what stnkit reads: corrupt, truncated, of the wrong kind."""


class ImageFileError(DatasetError):
    """An image file that is not a readable grey or RGB image of a usable size."""


def open_regular(path: str | os.PathLike, what: str = "an image"):
    """``path`` opened for binary reading, refused unless it is a regular file (never blocks on a FIFO)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except IsADirectoryError:
        raise ImageFileError(f"{path} is a directory; {what} must be a regular file") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a FIFO" if stat.S_ISFIFO(mode) else "a directory" if stat.S_ISDIR(mode) else "not a regular file"
            raise ImageFileError(f"{path} is {kind}; {what} must be a regular file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


class IdxError(DatasetError):
    """A file that is not a valid IDX file (truncated, corrupt, wrong kind)."""


def _open(path: Path):
    """``path`` opened if it is a regular file (non-blocking: a FIFO never hangs), gzip detected from its content."""
    try:
        raw = open_regular(path, "an IDX file")
    except ImageFileError as err:
        raise IdxError(str(err)) from None
    try:
        gz = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        return (gzip.GzipFile(fileobj=raw, mode="rb") if gz else raw), raw, gz
    except BaseException:
        raw.close()
        raise


def _read_exactly(f, n: int) -> bytes:
    """Up to ``n`` bytes of ``f``, read in chunks (so a short stream never allocates ``n``)."""
    parts, got = [], 0
    while got < n:
        block = f.read(min(_CHUNK, n - got))
        if not block:
            break
        parts.append(block)
        got += len(block)
    return b"".join(parts)


def _read_into(f, n: int) -> tuple[bytearray, int]:
    """``n`` bytes of ``f`` in one buffer (grown chunk by chunk, so a short stream never allocates
    ``n``, and never copied), and whether a byte follows them (trailing data)."""
    buf, got = bytearray(), 0
    while got < n:
        block = f.read(min(_CHUNK << 4, n - got))
        if not block:
            break
        buf += block
        got += len(block)
    return buf, len(f.read(1)) if got == n else 0


def read_idx(path: str | os.PathLike, expect_magic: int | None = None, *, max_bytes: int = MAX_IDX_BYTES) -> np.ndarray:
    """Read an IDX file (gzip detected from its content) into a numpy array.

    Args:
        path: the file.
        expect_magic: the magic number it must have (:data:`IMAGES_MAGIC` for
            MNIST images, :data:`LABELS_MAGIC` for labels); ``None`` accepts any valid one.
        max_bytes: refuse a header that declares more data than this (default
            :data:`MAX_IDX_BYTES`, 1 GiB); every dimension after the first must be at
            most :data:`MAX_IDX_SIDE`.

    The header is checked before the data are read: a plain file's length against
    the declared dimensions, a gzip file inflated only up to the declared length (and
    one byte more, which tells trailing data), so a corrupt or hostile header never
    makes it allocate more than it declares, nor more than ``max_bytes``.

    Raises:
        IdxError: bad magic number, unknown type code, a length that does not
            match the dimensions in the header (truncated or padded file), a
            corrupt gzip stream, or not a regular file (a directory, a FIFO, a device).
        FileNotFoundError: no such file.
    """
    path = Path(path)
    try:
        f, raw, gz = _open(path)
        with raw, f:
            arr = _parse(f, path, gz, expect_magic, max_bytes)
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as err:
        if isinstance(err, (FileNotFoundError, PermissionError)):
            raise
        raise IdxError(f"{path}: cannot be read as IDX (corrupt gzip?): {err}") from None
    except MemoryError:  # pragma: no cover (within max_bytes, the machine has less)
        raise IdxError(f"{path}: not enough memory for the data its header declares") from None
    return arr


def _parse(f, path: Path, gz: bool, expect_magic: int | None, max_bytes: int) -> np.ndarray:
    data = _read_exactly(f, 4)
    if len(data) < 4:
        raise IdxError(f"{path}: too short for an IDX header ({len(data)} bytes)")
    zero, code, ndim = struct.unpack(">HBB", data[:4])
    magic = struct.unpack(">I", data[:4])[0]
    if zero != 0 or code not in _DTYPES or ndim == 0:
        raise IdxError(f"{path}: bad IDX magic number 0x{magic:08x}")
    if expect_magic is not None and magic != expect_magic:
        raise IdxError(f"{path}: expected magic number {expect_magic}, got {magic}")
    header = 4 + 4 * ndim
    data += _read_exactly(f, 4 * ndim)
    if len(data) < header:
        raise IdxError(f"{path}: truncated header: needs {header} bytes, got {len(data)}")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_DTYPES[code])
    body = math.prod(dims) * dtype.itemsize  # a Python int: no overflow
    expected = header + body
    if any(d > MAX_IDX_SIDE for d in dims[1:]):
        raise IdxError(
            f"{path}: dimensions {dims}: expected every dimension after the first to be at most {MAX_IDX_SIDE:,}"
        )
    if body > max_bytes:
        raise IdxError(
            f"{path}: dimensions {dims} declare {body:,} bytes, more than the {max_bytes:,} stnkit reads (max_bytes)"
        )
    if not gz:  # the file's size tells before anything is allocated
        size = os.fstat(f.fileno()).st_size
        if size != expected:
            kind = "truncated" if size < expected else "has trailing bytes"
            raise IdxError(f"{path}: file {kind}: dimensions {dims} need {expected} bytes, got {size}")
    payload, more = _read_into(f, body)  # and one more byte, which tells trailing bytes
    got = header + len(payload)
    if got != expected or more:
        kind = "truncated" if got < expected else "has trailing bytes"
        what = "decompresses to" if gz else "holds"
        found = f"{got:,}" if got < expected else f"more than {expected:,}"
        raise IdxError(f"{path}: file {kind}: dimensions {dims} need {expected:,} bytes, it {what} {found}")
    arr = np.frombuffer(payload, dtype=dtype).reshape(dims)  # a view of the one buffer
    if dtype.byteorder == ">" and dtype.itemsize > 1:  # big-endian on disk: swapped in place
        return arr.byteswap(inplace=True).view(dtype.newbyteorder("="))
    return arr.view(dtype.newbyteorder("="))


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
