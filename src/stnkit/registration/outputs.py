"""The files ``stnkit register`` writes into ``--out`` (docs/registration.md describes each one).

- ``warped.<ext>``: MOVING on FIXED's grid, in FIXED's format (NIfTI with FIXED's header, ``.npy``, PNG).
- ``transform.json``: the world matrix (fixed -> moving, RAS millimetres for NIfTI, pixels otherwise),
  its LPS form for NIfTI, the parameters, the losses per level, the time.
- ``transform.tfm``: the same matrix in ITK's text format (``AffineTransform_double_3_3`` or ``_2_2``),
  in ITK's frame (LPS for NIfTI), readable by ``SimpleITK.ReadTransform``.
- ``field.nii.gz`` (NIfTI inputs; ``field.npy`` otherwise), for ``dense`` and ``velocity``: the field's
  displacement in world millimetres on FIXED's grid, applied before the matrix (see :func:`itk_field_array`).
- ``figure.png``: rows of slices (three orthogonal mid-slices for a volume), columns fixed | moving before
  (on FIXED's grid, through the headers alone) | warped | ``|fixed - warped|``.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import torch

from .._io import atomic_write_bytes, atomic_write_text
from ..data.folder import png_bytes
from ..data.volumes import Volume, nifti_bytes, write_volume
from ..geometry import warp
from .core import RegistrationResult
from .frames import fixed_to_moving_theta, ras_to_lps

__all__ = ["REGISTER_OUTPUTS", "check_out", "itk_transform_text", "output_names", "write_outputs"]

# every name ``stnkit register`` may write: --overwrite replaces these, and only these
REGISTER_OUTPUTS = (
    "warped.nii",
    "warped.nii.gz",
    "warped.npy",
    "warped.png",
    "transform.json",
    "transform.tfm",
    "field.nii.gz",
    "field.npy",
    "figure.png",
)
# NIfTI's "displacement vector" intent: ITK reads such a file's vectors as RAS and turns them into LPS
NIFTI_INTENT_DISPVECT = 1006


def check_out(out: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse an ``out`` that is a file, or that holds an earlier registration (unless ``overwrite``).

    With ``overwrite`` only :data:`REGISTER_OUTPUTS` are replaced, and a directory or a link under one of
    those names (not a file stnkit wrote) is refused; nothing else in ``out`` is touched.
    """
    out = Path(out)
    if not os.fspath(out):
        raise ValueError("--out must name a directory, got ''")
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file, not a directory")
    earlier = [out / n for n in REGISTER_OUTPUTS if (out / n).exists() or (out / n).is_symlink()]
    if earlier and not overwrite:
        raise FileExistsError(f"{out} already holds a registration ({earlier[0].name}): pass --overwrite to replace it")
    for p in earlier:
        if p.is_symlink() or not p.is_file():
            raise FileExistsError(
                f"--overwrite replaces only files stnkit wrote, and {p} is not a regular file; move it or use another --out"
            )
    return out


def output_names(fixed: Volume, transform: str) -> dict[str, str]:
    """The files a registration of ``fixed`` with ``transform`` writes, by role."""
    ext = fixed.suffix if fixed.kind in ("nifti", "npy") else ".png"
    names = {
        "warped": f"warped{ext or '.npy'}",
        "json": "transform.json",
        "itk": "transform.tfm",
        "figure": "figure.png",
    }
    if transform in ("dense", "velocity"):
        names["field"] = "field.nii.gz" if fixed.kind == "nifti" else "field.npy"
    return names


def world_frame(fixed: Volume) -> str:
    return "RAS millimetres (NIfTI world)" if fixed.kind == "nifti" else "pixels (x = column, y = row[, z = slice])"


def itk_transform_text(matrix: np.ndarray) -> str:
    """ITK's text format (``#Insight Transform File V1.0``) of a world matrix already in ITK's frame.

    ITK's affine maps ``x`` to ``A (x - c) + c + t``; with the centre ``c = 0`` its parameters are ``A``
    row-major then ``t``.
    """
    m = np.asarray(matrix, dtype=np.float64)
    k = m.shape[0] - 1
    params = " ".join(repr(float(v)) for v in [*m[:k, :k].ravel(), *m[:k, k]])
    return (
        "#Insight Transform File V1.0\n#Transform 0\n"
        f"Transform: AffineTransform_double_{k}_{k}\nParameters: {params}\nFixedParameters: {' '.join(['0'] * k)}\n"
    )


def itk_matrix(result: RegistrationResult, fixed: Volume) -> np.ndarray:
    """The matrix in ITK's physical frame: LPS for NIfTI, the pixel frame (unchanged) otherwise."""
    return ras_to_lps(result.matrix) if fixed.kind == "nifti" else np.asarray(result.matrix)


def itk_field_array(field_world: np.ndarray) -> np.ndarray:
    """The field ``(3, D, H, W)`` (world mm along ``(x, y, z)``) as nibabel's ``(I, J, K, 1, 3)`` vector array."""
    return np.ascontiguousarray(field_world.transpose(3, 2, 1, 0)[:, :, :, None, :].astype(np.float32))


def write_outputs(
    out: Path, result: RegistrationResult, fixed: Volume, moving: Volume, settings: dict | None = None
) -> dict[str, Path]:
    """Write every output of ``result`` into ``out`` (atomically, one file at a time); their paths by role."""
    out.mkdir(parents=True, exist_ok=True)
    names = output_names(fixed, result.transform)
    paths = {role: out / name for role, name in names.items()}
    write_volume(paths["warped"], result.warped, fixed)
    atomic_write_text(paths["itk"], itk_transform_text(itk_matrix(result, fixed)))
    if "field" in paths:
        if fixed.kind == "nifti":
            data = nifti_bytes(itk_field_array(result.field_world), fixed.header, paths["field"], NIFTI_INTENT_DISPVECT)
            atomic_write_bytes(paths["field"], data)
        else:
            buf = io.BytesIO()
            np.lib.format.write_array(buf, result.field_world.astype(np.float32), allow_pickle=False)
            atomic_write_bytes(paths["field"], buf.getvalue())
    atomic_write_bytes(paths["figure"], figure_png(result, fixed, moving))
    record = {
        "transform": result.transform,
        "settings": settings or {},
        "fixed": {"path": os.fspath(fixed.path) if fixed.path else None, "grid": fixed.describe()},
        "moving": {"path": os.fspath(moving.path) if moving.path else None, "grid": moving.describe()},
        "frame": world_frame(fixed),
        "direction": "fixed world -> moving world: the point of MOVING that each point of FIXED reads (as ITK)",
        "matrix": np.asarray(result.matrix).tolist(),
        "parameters": result.parameters,
        "levels": result.levels,
        "seconds": result.seconds,
        "files": {role: p.name for role, p in paths.items()},
    }
    if fixed.kind == "nifti":
        record["matrix_lps"] = ras_to_lps(result.matrix).tolist()
    if result.field is not None:
        record["field"] = {
            "file": paths["field"].name,
            "units": "mm" if fixed.kind == "nifti" else "pixels",
            "composition": "MOVING is read at matrix(p + field(p)): the field first, then the matrix",
            "folding_fraction": result.folding,
        }
    paths["json"] = atomic_write_text(paths["json"], json.dumps(record, indent=2) + "\n")
    return paths


# -- the figure ----------------------------------------------------------------------------------
def _slices(x: np.ndarray) -> list[np.ndarray]:
    """Mid-slices: the image itself in 2-D; in 3-D across D, H and W (each shown with its larger axis wide)."""
    if x.ndim == 2:
        return [x]
    d, h, w = x.shape
    return [x[d // 2], x[:, h // 2, :][::-1], x[:, :, w // 2][::-1]]


def figure_png(result: RegistrationResult, fixed: Volume, moving: Volume, min_side: int = 128) -> bytes:
    """The figure's PNG bytes (numpy only): fixed | moving before | warped | |fixed - warped|, per slice."""
    with torch.no_grad():
        theta = fixed_to_moving_theta(
            np.eye(fixed.dims + 1), fixed.affine, fixed.spatial, moving.affine, moving.spatial
        )
        before = warp(moving.data.float()[None], theta[None].float(), "affine", out_size=fixed.spatial)[0]
    f = fixed.data.float().mean(0).numpy()
    b = before.mean(0).numpy()
    w = result.warped.float().mean(0).numpy()

    def unit(x, ref):
        hi = float(np.percentile(ref, 99.5)) or 1.0
        lo = float(ref.min())
        return np.clip((x - lo) / max(hi - lo, 1e-12), 0, 1)

    fn, bn, wn = unit(f, f), unit(b, b), unit(w, b)
    diff = np.clip(np.abs(fn - wn), 0, 1)
    rows = []
    for tiles in zip(_slices(fn), _slices(bn), _slices(wn), _slices(diff)):
        scale = max(1, int(np.ceil(min_side / max(tiles[0].shape))))
        big = [np.kron(t, np.ones((scale, scale))) for t in tiles]
        gap = np.ones((big[0].shape[0], 4))
        rows.append(np.concatenate([x for t in big for x in (t, gap)][:-1], axis=1))
    width = max(r.shape[1] for r in rows)
    padded = [np.pad(r, ((0, 4), (0, width - r.shape[1])), constant_values=1.0) for r in rows]
    img = np.concatenate(padded, axis=0)[:-4]
    return png_bytes((img * 255).round().astype(np.uint8))
