"""Write a distorted-MNIST split to disk (IDX, npz, manifest, preview) and read it back."""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import torch

from .._io import atomic_path, atomic_write_text
from ..geometry import TRANSFORMS
from ..viz import montage, save_png
from .dataset import DistortedMNIST, load_distorted, stream_seed
from .download import sha256_file
from .idx import IMAGES_MAGIC, LABELS_MAGIC, DatasetError, read_idx, write_idx
from .mnist import check_labelled

FORMAT = "stnkit-distorted-mnist/1"
IMAGES_FILE = "images-idx3-ubyte.gz"
LABELS_FILE = "labels-idx1-ubyte.gz"
PARAMS_FILE = "params.npz"
PREVIEW_FILE = "preview.png"
MANIFEST_FILE = "manifest.json"
CONVENTION = (
    "params map output (sample) coordinates to input (digit) coordinates, normalised to [-1, 1] over "
    "each image's own frame, x before y, align_corners=False: "
    "sample = stnkit.warp(digit, params, transform, out_size=canvas_size)"
)


def write_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> Path:
    """Like ``np.savez_compressed`` but byte-for-byte reproducible (fixed zip timestamps), no pickles."""
    path = Path(path)
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key, value in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(value), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())
    return path


def preview(images: torch.Tensor, n: int = 64) -> np.ndarray:
    """A montage (8 columns) of the first ``n`` images ``(N, 1, S, S)``."""
    x = images[:n, 0].numpy()
    return montage(x, ncols=min(8, x.shape[0]))


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """``(N, 1, S, S)`` floats in [0, 1] to ``(N, S, S)`` uint8 (round half up, as MNIST's 8 bits)."""
    return (images[:, 0].clamp(0, 1) * 255.0 + 0.5).floor().to(torch.uint8).numpy()


def write_dataset(ds: DistortedMNIST, out: str | os.PathLike, info: dict | None = None) -> dict:
    """Write ``ds``'s current draw to ``out``; returns the manifest.

    Files: ``images-idx3-ubyte.gz`` (uint8 ``(N, S, S)``, the float images rounded
    to 8 bits), ``labels-idx1-ubyte.gz`` (uint8), ``params.npz`` (``params``
    float32 ``(N, P)`` plus ``transform`` and ``canvas_size``), ``preview.png``
    (the first 64 samples) and ``manifest.json`` (recipe, seeds, counts and the
    SHA-256 of every other file). The same inputs give byte-identical files.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    labels = ds.labels.numpy()
    write_idx(out / IMAGES_FILE, to_uint8(ds.images))
    write_idx(out / LABELS_FILE, labels.astype(np.uint8))
    write_npz(
        out / PARAMS_FILE,
        {
            "params": ds.params.numpy().astype(np.float32),
            "transform": np.array(ds.transform),
            "canvas_size": np.array(ds.canvas_size, dtype=np.int64),
        },
    )
    save_png(out / PREVIEW_FILE, preview(ds.images))
    files = {}
    for name in (IMAGES_FILE, LABELS_FILE, PARAMS_FILE, PREVIEW_FILE):
        p = out / name
        files[name] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
    from .. import __version__

    manifest = {
        "format": FORMAT,
        **(info or {}),
        "seed": ds.seed,
        "fresh": ds.fresh,
        "epoch": ds.epoch,
        "generator_seed": stream_seed(ds.seed, ds.epoch),
        "recipe": ds.distortion.recipe(),
        "count": len(ds),
        "class_counts": np.bincount(labels, minlength=10).tolist(),
        "image_shape": [ds.canvas_size, ds.canvas_size],
        "images": "uint8, value = round(255 * intensity)",
        "params_shape": list(ds.params.shape),
        "convention": CONVENTION,
        "files": files,
        "stnkit_version": __version__,
        "torch_version": torch.__version__.split("+")[0],
    }
    atomic_write_text(out / MANIFEST_FILE, json.dumps(manifest, indent=2) + "\n")
    return manifest


def make_dataset(
    name: str,
    split: str,
    seed: int,
    out: str | os.PathLike,
    *,
    n: int | None = None,
    data_dir: str | os.PathLike | None = None,
    **recipe_options,
) -> dict:
    """Generate a split (epoch 0 of the training draws, or the fixed test draw) and write it."""
    ds = load_distorted(name, split, seed, data_dir=data_dir, n=n, **recipe_options)
    source = "bundled mnist8k (7,000 train / 1,000 test)" if data_dir is None else "MNIST IDX directory"
    info = {"name": name, "split": split, "source": source}
    if data_dir is not None:
        info["data_dir"] = str(data_dir)
    return write_dataset(ds, out, info)


def make_image_folder(
    name: str,
    split: str,
    seed: int,
    out: str | os.PathLike,
    *,
    n: int | None = None,
    data_dir: str | os.PathLike | None = None,
    **recipe_options,
) -> dict:
    """Like :func:`make_dataset`, written as an image folder: ``OUT/<split>/<label>/<index>.png``.

    The uint8 pixels are exactly those of the IDX route (:func:`to_uint8` of the same
    draw), ``index`` is the sample's position in the IDX file (zero-padded), and
    ``OUT/<split>/`` also holds ``params.npz`` (the ground truth) and ``info.json``
    (recipe, seeds, counts), which the folder reader ignores. ``OUT/<split>`` must
    not exist yet (or be empty): nothing is overwritten. Returns the info.
    """
    from .folder import write_image_folder

    ds = load_distorted(name, split, seed, data_dir=data_dir, n=n, **recipe_options)
    labels = ds.labels.numpy()
    source = "bundled mnist8k (7,000 train / 1,000 test)" if data_dir is None else "MNIST IDX directory"
    info = {
        "format": "stnkit-distorted-mnist-imagefolder/1",
        "name": name,
        "split": split,
        "source": source,
        **({"data_dir": str(data_dir)} if data_dir is not None else {}),
        "seed": ds.seed,
        "fresh": ds.fresh,
        "epoch": ds.epoch,
        "generator_seed": stream_seed(ds.seed, ds.epoch),
        "recipe": ds.distortion.recipe(),
        "count": len(ds),
        "class_counts": np.bincount(labels, minlength=10).tolist(),
        "image_shape": [ds.canvas_size, ds.canvas_size],
        "images": "<label>/<index>.png, 8-bit grey, value = round(255 * intensity), index = position in the IDX file",
        "convention": CONVENTION,
    }
    folder = write_image_folder(to_uint8(ds.images), labels, Path(out) / split, info)
    write_npz(
        folder / PARAMS_FILE,
        {
            "params": ds.params.numpy().astype(np.float32),
            "transform": np.array(ds.transform),
            "canvas_size": np.array(ds.canvas_size, dtype=np.int64),
        },
    )
    return info


def load_dataset_dir(directory: str | os.PathLike, verify: bool = True) -> dict:
    """Read a directory written by :func:`write_dataset`.

    Returns a dict with ``images`` (uint8 ``(N, S, S)``), ``labels`` (int64),
    ``params`` (float32 ``(N, P)``), ``transform`` and ``manifest``. With ``verify``
    every file's SHA-256 is checked against the manifest. A file that is
    missing a part, corrupt, or inconsistent (counts, dtypes, label range, an npz
    holding pickles) raises :class:`~stnkit.data.DatasetError`.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"dataset directory {directory} does not exist or is not a directory")
    try:
        manifest = json.loads((directory / MANIFEST_FILE).read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetError(f"{directory / MANIFEST_FILE}: not valid JSON ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else manifest
        raise DatasetError(f"{directory}: manifest format must be {FORMAT!r}, got {got!r}")
    if verify:
        files = manifest.get("files")
        if not isinstance(files, dict):
            raise DatasetError(f"{directory / MANIFEST_FILE}: no 'files' table of SHA-256 digests")
        for name, meta in files.items():
            if Path(name).name != name:
                raise DatasetError(f"{directory / MANIFEST_FILE}: file names must be plain names, got {name!r}")
            got = sha256_file(directory / name)
            if not isinstance(meta, dict) or got != meta.get("sha256"):
                want = meta.get("sha256") if isinstance(meta, dict) else meta
                raise DatasetError(f"{directory / name}: SHA-256 {got} does not match the manifest's {want}")
    images = read_idx(directory / IMAGES_FILE, IMAGES_MAGIC)
    labels = read_idx(directory / LABELS_FILE, LABELS_MAGIC)
    check_labelled(images, labels, str(directory))
    params, transform = _read_params(directory / PARAMS_FILE, images.shape[0])
    return {
        "images": images,
        "labels": labels.astype(np.int64),
        "params": params,
        "transform": transform,
        "manifest": manifest,
    }


def _read_params(path: Path, n: int) -> tuple[np.ndarray, str]:
    """``params.npz``: float ``(n, P)`` parameters of a known transform family (no pickles)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            params, transform = z["params"], z["transform"]
    except (ValueError, KeyError, OSError, zipfile.BadZipFile, EOFError) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise DatasetError(f"{path}: not an npz of 'params' and 'transform' without pickles ({err})") from None
    if params.ndim != 2 or params.shape[0] != n or not np.issubdtype(params.dtype, np.floating):
        raise DatasetError(f"{path}: params must be floats of shape ({n}, P), got {params.dtype} {params.shape}")
    if transform.ndim != 0 or transform.dtype.kind != "U" or str(transform) not in TRANSFORMS:
        raise DatasetError(f"{path}: transform must name one of {', '.join(TRANSFORMS)}, got {transform!r}")
    return params, str(transform)


__all__ = ["load_dataset_dir", "make_dataset", "make_image_folder", "write_dataset", "write_npz"]
