"""MNIST sources: the bundled 8k digits and a directory of the standard IDX files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .idx import read_idx

BUNDLED_DIR = Path(__file__).parent / "mnist8k"
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049


def _check_pair(images: np.ndarray, labels: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    if images.ndim != 3:
        raise ValueError(f"{where}: images must have shape (N, H, W), got {images.shape}")
    if labels.shape != (images.shape[0],):
        raise ValueError(f"{where}: labels must have shape ({images.shape[0]},), got {labels.shape}")
    return images, labels


def bundled_mnist() -> tuple[np.ndarray, np.ndarray]:
    """The 8,000 real MNIST training digits shipped with stnkit: (N, 28, 28) uint8 and (N,) labels."""
    images = read_idx(BUNDLED_DIR / "images-idx3-ubyte.gz", IMAGES_MAGIC)
    labels = read_idx(BUNDLED_DIR / "labels-idx1-ubyte.gz", LABELS_MAGIC)
    return _check_pair(images, labels, "bundled mnist8k")


MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def load_mnist_dir(directory: str | os.PathLike, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Read full MNIST from a directory holding the four standard IDX files (plain or ``.gz``)."""
    if split not in MNIST_FILES:
        raise ValueError(f"split must be one of 'train', 'test', got {split!r}")
    directory = Path(directory)
    found = []
    for stem in MNIST_FILES[split]:
        candidates = [directory / stem, directory / f"{stem}.gz"]
        path = next((p for p in candidates if p.exists()), None)
        if path is None:
            raise FileNotFoundError(f"{directory}: neither {stem} nor {stem}.gz found")
        found.append(path)
    images = read_idx(found[0], IMAGES_MAGIC)
    labels = read_idx(found[1], LABELS_MAGIC)
    return _check_pair(images, labels, str(directory))
