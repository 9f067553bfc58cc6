"""Datasets: MNIST sources (bundled, directory, arrays) and the distorted-MNIST family."""

from .idx import IdxError, read_idx, write_idx
from .mnist import bundled_mnist, load_mnist_dir

__all__ = ["IdxError", "bundled_mnist", "load_mnist_dir", "read_idx", "write_idx"]
