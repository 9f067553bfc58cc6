"""Datasets: MNIST sources (bundled, directory, arrays) and the distorted-MNIST family.

>>> from stnkit.data import load_digits, DistortedMNIST
>>> images, labels = load_digits("test")          # the bundled digits: 1,000 test / 7,000 train
>>> ds = DistortedMNIST("rts", images, labels, seed=0)
>>> ds[0][0].shape, ds.transform, tuple(ds.params.shape)
(torch.Size([1, 42, 42]), 'similarity', (1000, 4))
"""

from .addition import AdditionMNIST
from .colocalization import COLOC_KINDS, CoLocalization
from .compositing import CompositingScenes
from .dataset import DistortedMNIST, load_distorted
from .distortions import DISTORTIONS, Distortion, get_distortion
from .download import DEFAULT_MIRROR, MNIST_SHA256, DownloadError, download_mnist
from .export import load_dataset_dir, make_dataset, make_image_folder, write_dataset
from .folder import (
    ImageData,
    ImageFolderDataset,
    channel_stats,
    open_image_data,
    read_image,
    read_image_manifest,
    scan_image_folder,
)
from .homography import HomographyPatches, homography_splits, offsets_to_params, params_to_offsets
from .idx import DatasetError, IdxError, read_idx, write_idx
from .images import fit_to_canvas, read_grey_png
from .ink import ink_fraction
from .mnist import bundled_mnist, bundled_split_indices, load_digits, load_mnist_dir
from .parts import NUM_PART_CLASSES, PartsScenes
from .shapes import ShapesPairs
from .tasks import DATASETS, REGISTRATION_DATASETS, DatasetInfo, dataset_info, open_dataset, open_pairs

__all__ = [
    "AdditionMNIST",
    "COLOC_KINDS",
    "CoLocalization",
    "CompositingScenes",
    "DATASETS",
    "REGISTRATION_DATASETS",
    "DEFAULT_MIRROR",
    "DISTORTIONS",
    "DatasetError",
    "DatasetInfo",
    "MNIST_SHA256",
    "NUM_PART_CLASSES",
    "PartsScenes",
    "DistortedMNIST",
    "Distortion",
    "DownloadError",
    "IdxError",
    "HomographyPatches",
    "ImageData",
    "ImageFolderDataset",
    "ShapesPairs",
    "bundled_mnist",
    "bundled_split_indices",
    "channel_stats",
    "dataset_info",
    "download_mnist",
    "fit_to_canvas",
    "get_distortion",
    "homography_splits",
    "ink_fraction",
    "load_dataset_dir",
    "load_digits",
    "load_distorted",
    "load_mnist_dir",
    "make_dataset",
    "make_image_folder",
    "offsets_to_params",
    "open_dataset",
    "open_image_data",
    "open_pairs",
    "params_to_offsets",
    "read_grey_png",
    "read_idx",
    "read_image",
    "read_image_manifest",
    "scan_image_folder",
    "write_dataset",
    "write_idx",
]
