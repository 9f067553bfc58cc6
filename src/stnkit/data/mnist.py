"""MNIST sources: the bundled 8k digits and a directory of the standard IDX files."""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from .idx import IMAGES_MAGIC, LABELS_MAGIC, DatasetError, read_idx

BUNDLED_DIR = Path(__file__).parent / "mnist8k"


def check_labelled(images: np.ndarray, labels: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Refuse digits that are not ``(N, H, W)`` uint8 images with ``N`` integer labels in 0..9 (:class:`DatasetError`)."""
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DatasetError(f"{where}: images must be uint8 of shape (N, H, W), got {images.dtype} {images.shape}")
    if labels.shape != (images.shape[0],):
        raise DatasetError(
            f"{where}: labels must have shape ({images.shape[0]},) to match {images.shape[0]} images, "
            f"got shape {labels.shape}"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise DatasetError(f"{where}: labels must be integers, got {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DatasetError(f"{where}: labels must lie in 0..9, got range [{labels.min()}, {labels.max()}]")
    return images, labels


def bundled_mnist() -> tuple[np.ndarray, np.ndarray]:
    """The 8,000 real MNIST training digits shipped with stnkit: (N, 28, 28) uint8 and (N,) labels."""
    images = read_idx(BUNDLED_DIR / "images-idx3-ubyte.gz", IMAGES_MAGIC)
    labels = read_idx(BUNDLED_DIR / "labels-idx1-ubyte.gz", LABELS_MAGIC)
    return check_labelled(images, labels, "bundled mnist8k")


MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def load_mnist_dir(directory: str | os.PathLike, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Read full MNIST from a directory holding the four standard IDX files (plain or ``.gz``)."""
    if split not in MNIST_FILES:
        raise ValueError(f"split must be one of 'train', 'test', got {split!r}")
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(f"--data-dir {directory} is a file; a directory of MNIST IDX files is needed")
    found = []
    for stem in MNIST_FILES[split]:
        candidates = [directory / stem, directory / f"{stem}.gz"]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise FileNotFoundError(f"{directory}: neither {stem} nor {stem}.gz found")
        found.append(path)
    images = read_idx(found[0], IMAGES_MAGIC)
    labels = read_idx(found[1], LABELS_MAGIC)
    return check_labelled(images, labels, str(directory))


# -- the fixed split of the bundled digits ----------------------------------------------------
SPLIT_SEED = 20150605  # the paper's arXiv date; any change here changes every bundled experiment
TEST_PER_CLASS = 100  # 10 classes x 100 = 1,000 test digits, the other 7,000 train


def _hash_key(seed: int, index: int) -> int:
    digest = hashlib.sha256(f"stnkit-mnist8k-split:{seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


@lru_cache(maxsize=4)
def bundled_split_indices(seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Indices into the bundled digits of the fixed train (7,000) and test (1,000) split.

    Class-balanced test set: for each class, the ``TEST_PER_CLASS`` digits with the
    smallest SHA-256 key ``sha256("stnkit-mnist8k-split:{seed}:{index}")``; every
    other digit is a training digit. Both lists are in file order. SHA-256 (not a
    random generator) makes the split identical on every machine and version.
    """
    _, labels = bundled_mnist()
    keys = np.array([_hash_key(seed, i) for i in range(labels.shape[0])], dtype=np.uint64)
    test = []
    for c in range(10):
        members = np.flatnonzero(labels == c)
        if members.shape[0] < TEST_PER_CLASS:
            raise ValueError(f"bundled digits hold only {members.shape[0]} of class {c}, need {TEST_PER_CLASS}")
        order = np.argsort(keys[members], kind="stable")
        test.append(members[order[:TEST_PER_CLASS]])
    test_idx = np.sort(np.concatenate(test))
    train_idx = np.setdiff1d(np.arange(labels.shape[0]), test_idx)
    train_idx.flags.writeable = False
    test_idx.flags.writeable = False
    return train_idx, test_idx


def load_digits(split: str = "train", data_dir: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Real MNIST digits of a split: ``(N, 28, 28)`` uint8 images and ``(N,)`` int64 labels.

    Args:
        split: ``"train"`` or ``"test"``.
        data_dir: ``None`` for the bundled 8,000 digits with the fixed class-balanced
            split (7,000 train / 1,000 test, see :func:`bundled_split_indices`); a
            directory with the four standard MNIST IDX files (plain or ``.gz``) for
            full MNIST (60,000 train / 10,000 test).
    """
    if split not in MNIST_FILES:
        raise ValueError(f"split must be one of 'train', 'test', got {split!r}")
    if data_dir is None:
        images, labels = bundled_mnist()
        idx = bundled_split_indices()[0 if split == "train" else 1]
        images, labels = images[idx], labels[idx]
    else:
        images, labels = load_mnist_dir(data_dir, split)
    if images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise DatasetError(f"digits must be (N, 28, 28) uint8, got {images.shape} {images.dtype}")
    return np.ascontiguousarray(images), labels.astype(np.int64)
