"""Images and volumes with their place in the world: NIfTI, NumPy ``.npy``, PNG/JPEG.

What ``stnkit register`` reads and writes. A :class:`Volume` holds the voxels as a float32 tensor
``(C, H, W)`` or ``(C, D, H, W)`` in stnkit's axis order (``x`` along the last axis, as in
``F.affine_grid``) and the **affine** from voxel coordinates ``(x, y[, z], 1)`` (voxel centres at integer
indices) to world coordinates in millimetres.

- **NIfTI** (``.nii``, ``.nii.gz``, through nibabel, imported when needed): nibabel's array ``[i, j, k]`` is
  the tensor ``[k, j, i]``, so the voxel coordinate ``(x, y, z)`` is nibabel's ``(i, j, k)`` and the affine is
  nibabel's ``img.affine`` (the sform when its code is set, else the qform): **RAS+** millimetres, NIfTI's
  world. A 4-D file with one volume is read as 3-D; NaN and inf voxels read as 0.
- **NumPy** ``.npy``: a 2-D ``(H, W)`` or 3-D ``(D, H, W)`` array of numbers in stnkit's axis order; no
  header, so the world is the voxel grid itself (spacing 1, origin 0, the identity affine).
- **PNG/JPEG** (2-D): grey or colour, read by :func:`stnkit.data.folder.read_image` (header checked first);
  world = pixel coordinates ``(x = column, y = row)``, the frame SimpleITK gives a PNG (spacing 1, origin 0).

Headers are checked before anything is allocated: a file declaring more than :data:`MAX_VOXELS` voxels, a
side over :data:`MAX_SIDE`, a singular or non-finite affine or a truncated body is refused in one line.
"""

from __future__ import annotations

import gzip
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .._io import atomic_write_bytes
from .folder import png_bytes, read_image, read_image_header
from .idx import ImageFileError, open_regular

__all__ = [
    "MAX_SIDE",
    "MAX_VOXELS",
    "VOLUME_SUFFIXES",
    "Volume",
    "read_volume",
    "volume_kind",
    "write_volume",
]

# the most voxels (over all channels) and the longest side a file may declare
MAX_VOXELS = 1 << 27
MAX_SIDE = 8192
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".npy", ".png", ".jpg", ".jpeg")


@dataclass
class Volume:
    """Voxels and where they are: ``data`` ``(C, *spatial)`` float32, ``affine`` voxel ``(x, y[, z])`` -> world.

    ``kind`` is ``nifti``, ``npy``, ``image`` (PNG/JPEG) or ``array`` (made in Python); ``header`` the
    nibabel header of a NIfTI (written again with the warped image); ``bit_depth`` that of a PNG/JPEG.
    """

    data: Tensor
    affine: np.ndarray
    kind: str = "array"
    path: Path | None = None
    header: object | None = None
    bit_depth: int = 8
    suffix: str = ""
    scale: float = 1.0  # a PNG/JPEG's data is in [0, 1]: times this, its stored values
    extra: dict = field(default_factory=dict)

    @property
    def dims(self) -> int:
        return self.data.ndim - 1

    @property
    def spatial(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.data.shape[1:])

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel sizes in mm along ``(x, y[, z])``: the norms of the affine's columns."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:-1, :-1], axis=0))

    def describe(self) -> str:
        size = "x".join(str(s) for s in reversed(self.spatial))
        spacing = "x".join(f"{s:g}" for s in self.spacing)
        unit = " mm" if self.kind == "nifti" else ""
        return f"{size} voxels of {spacing}{unit}" if self.dims == 3 else f"{size} pixels"


def volume_kind(path: str | os.PathLike) -> str:
    """``nifti``, ``npy`` or ``image`` from the file name; a ValueError naming the suffixes read otherwise."""
    name = os.fspath(path).lower()
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    if name.endswith(".npy"):
        return "npy"
    if name.endswith((".png", ".jpg", ".jpeg")):
        return "image"
    raise ValueError(f"{path}: unknown image type; expected one of {', '.join(VOLUME_SUFFIXES)}")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def read_volume(path: str | os.PathLike) -> Volume:
    """Read a NIfTI, ``.npy`` or PNG/JPEG file as a :class:`Volume` (see the module docstring).

    Raises:
        ValueError: an unknown suffix. ImageFileError (a ValueError): a file that is not what its
            suffix says, declares too many voxels, has a singular affine, or is truncated.
        FileNotFoundError, PermissionError: as ``open``. ImportError: nibabel missing for a NIfTI.
    """
    path = Path(path)
    kind = volume_kind(path)
    with open_regular(path, "an image or volume"):
        pass  # exists, is a regular file (not a FIFO or a directory)
    if kind == "nifti":
        vol = _read_nifti(path)
    elif kind == "npy":
        vol = _read_npy(path)
    else:
        header = read_image_header(path)
        vol = Volume(read_image(path), np.eye(3), "image", path, bit_depth=header.bit_depth)
        vol.scale = 65535.0 if header.bit_depth == 16 else 255.0
    vol.path, vol.suffix = path, _suffix(path)
    return vol


def _check_shape(path: Path, shape: tuple[int, ...]) -> None:
    if any(s <= 0 for s in shape) or max(shape) > MAX_SIDE or int(np.prod(shape, dtype=np.float64)) > MAX_VOXELS:
        raise ImageFileError(
            f"{path}: declares {'x'.join(map(str, shape))} voxels; expected sides of 1 to {MAX_SIDE} "
            f"and at most {MAX_VOXELS:,} voxels"
        )


def _check_affine(path: Path, affine: np.ndarray) -> np.ndarray:
    affine = np.asarray(affine, dtype=np.float64)
    k = affine.shape[0] - 1
    lin = affine[:k, :k]
    if not np.isfinite(affine).all() or abs(np.linalg.det(lin)) < 1e-12 * max(1.0, np.abs(lin).max()) ** k:
        raise ImageFileError(f"{path}: its voxel-to-world affine is singular or not finite: {affine.tolist()}")
    return affine


def _nibabel():
    try:
        import nibabel
    except ImportError:
        raise ImportError("reading NIfTI files needs nibabel: pip install nibabel (or stnkit[volumes])") from None
    return nibabel


def _read_nifti(path: Path) -> Volume:
    nib = _nibabel()
    try:
        img = nib.load(path)
    except (nib.filebasedimages.ImageFileError, OSError, EOFError, ValueError) as err:
        if isinstance(err, (FileNotFoundError, PermissionError)):
            raise
        raise ImageFileError(f"{path}: not a readable NIfTI file ({' '.join(str(err).split())[:200]})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise ImageFileError(f"{path}: not a NIfTI image (nibabel reads it as {type(img).__name__})")
    shape = tuple(int(s) for s in img.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != 3:
        raise ImageFileError(f"{path}: a 3-D volume is needed, got shape {shape}")
    _check_shape(path, shape)
    if min(shape) < 2:
        raise ImageFileError(f"{path}: a 3-D volume is needed (at least 2 voxels along each axis), got shape {shape}")
    header = img.header
    itemsize = np.dtype(header.get_data_dtype()).itemsize
    if path.name.lower().endswith(".nii"):
        need = int(header.get_data_offset()) + int(np.prod(shape)) * itemsize
        if path.stat().st_size < need:
            raise ImageFileError(
                f"{path}: truncated: the header declares {need:,} bytes, the file has {path.stat().st_size:,}"
            )
    affine = _check_affine(path, img.affine)
    try:
        arr = np.asarray(img.dataobj, dtype=np.float32).reshape(shape)
    except (OSError, EOFError, ValueError, gzip.BadGzipFile) as err:
        raise ImageFileError(f"{path}: truncated or corrupt NIfTI data ({' '.join(str(err).split())[:200]})") from None
    arr = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)
    data = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 1, 0)))[None]
    return Volume(data, affine, "nifti", path, header=header.copy())


def _read_npy(path: Path) -> Volume:
    with open_regular(path, "a .npy file") as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        except (ValueError, OSError, SyntaxError) as err:
            raise ImageFileError(f"{path}: not a .npy file ({' '.join(str(err).split())[:200]})") from None
        start = f.tell()
    if dtype.kind not in "biuf" or dtype.hasobject:
        raise ImageFileError(f"{path}: an array of numbers is needed, got dtype {dtype}")
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3):
        raise ImageFileError(f"{path}: a 2-D (H, W) or 3-D (D, H, W) array is needed, got shape {shape}")
    _check_shape(path, shape)
    need = start + int(np.prod(shape)) * dtype.itemsize
    if path.stat().st_size < need:
        raise ImageFileError(
            f"{path}: truncated: the header declares {need:,} bytes, the file has {path.stat().st_size:,}"
        )
    if len(shape) == 3 and min(shape) < 2:
        raise ImageFileError(f"{path}: a 3-D volume is needed (at least 2 voxels along each axis), got shape {shape}")
    arr = np.load(path, allow_pickle=False)
    arr = np.nan_to_num(np.asarray(arr, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    data = torch.from_numpy(np.ascontiguousarray(arr))[None]
    return Volume(data, np.eye(len(shape) + 1), "npy", path)


def write_volume(path: str | os.PathLike, data: Tensor | np.ndarray, like: Volume) -> Path:
    """Write ``data`` ``(C, *spatial)`` (or ``spatial``) on ``like``'s grid, in ``like``'s format, atomically.

    NIfTI: ``like``'s header (its sform and qform, so the same world), the data as float32. ``.npy``: float32.
    PNG: 8-bit (16-bit when ``like`` was), values scaled back to ``like``'s range, rounded and clipped.
    """
    path = Path(path)
    arr = data.detach().cpu().numpy() if isinstance(data, Tensor) else np.asarray(data)
    if arr.ndim == like.dims:
        arr = arr[None]
    if tuple(arr.shape[1:]) != like.spatial:
        raise ValueError(f"data must have the spatial size {like.spatial} of like, got {tuple(arr.shape[1:])}")
    arr = arr.astype(np.float32)
    if like.kind == "nifti":
        return atomic_write_bytes(path, nifti_bytes(arr[0].transpose(2, 1, 0), like.header, path))
    if like.kind == "image":
        img = np.clip(np.rint(arr * like.scale), 0, like.scale).astype(np.uint16 if like.bit_depth == 16 else np.uint8)
        img = img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)
        return atomic_write_bytes(path, png_bytes(img))
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr[0] if arr.shape[0] == 1 else arr, allow_pickle=False)  # to memory
    return atomic_write_bytes(path, buf.getvalue())


def nifti_bytes(arr: np.ndarray, header: object, path: str | os.PathLike, intent: int | None = None) -> bytes:
    """The bytes of a NIfTI-1 file of ``arr`` (nibabel's axis order) with ``header``'s world (sform and qform),
    as float32; gzip-compressed when ``path`` ends in ``.gz``; ``intent`` a NIfTI intent code."""
    nib = _nibabel()
    hdr = nib.Nifti1Header.from_header(header) if header is not None else nib.Nifti1Header()
    img = nib.Nifti1Image(np.asarray(arr, dtype=np.float32), None, header=hdr)
    img.set_data_dtype(np.float32)
    if intent is not None:
        img.header.set_intent(intent)
    raw = img.to_bytes()
    return gzip.compress(raw, 6, mtime=0) if os.fspath(path).lower().endswith(".gz") else raw
