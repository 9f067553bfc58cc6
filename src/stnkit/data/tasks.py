"""Every dataset stnkit trains on, by name: the distorted-MNIST recipes, the multi-digit tasks, the
registration pairs (``shapes2d``, ``shapes3d``) and the homography patches of real photographs
(:mod:`.homography`).

A dataset is built from 28x28 source digits (``images``, ``labels``) and a ``seed``;
``fresh=True`` re-draws it every epoch (:meth:`set_epoch`), ``fresh=False`` keeps one
fixed draw (validation and test). :func:`dataset_info` says what a model needs to know
about it: input channels, canvas size, classes and labels per sample, its task and the unit of its error.
A registration dataset (``task="registration"``) is synthetic: :func:`open_pairs` draws its
pairs from a seed alone (no source digits); a homography dataset gives its splits itself.

>>> dataset_info("rts")
DatasetInfo(name='rts', in_channels=1, canvas_size=42, num_classes=10, num_labels=1, task='classification', dims=2, sizes=None)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch.utils.data import Dataset

from .._checks import check_choice
from .addition import NUM_SUMS, AdditionMNIST
from .dataset import DistortedMNIST
from .distortions import DISTORTIONS, get_distortion
from .homography import PATCH, homography_splits
from .sequence import SEQUENCE_CANVAS, SEQUENCE_LENGTH, SequenceMNIST
from .shapes import DEFAULT_SIZE, ShapesPairs

TASKS = ("classification", "registration", "homography")


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset.

    Attributes:
        name: the dataset's name (``stnkit train --dataset NAME``).
        in_channels: channels of each sample.
        canvas_size: height and width of each sample (square canvases).
        num_classes: classes of each label.
        num_labels: labels per sample: 1 (a class index ``()``) or more (``(num_labels,)``, e.g. a digit sequence).
        task: ``classification`` (``(image, label)`` samples) or ``registration`` (``(pair, ground truth)``:
            the moving and fixed images as channels, and a dict of their label maps and the true field;
            ``num_classes`` counts the labels of the maps, background included).
        dims: 2 (images) or 3 (volumes).
        sizes: a registration dataset's pairs for training and testing when ``train_size`` and
            ``test_size`` are not given.
        error_unit: the unit of the task's error (``"%"``; ``"px"`` for homography, the mean corner error).
        splits: for a dataset not built from source digits or drawn pairs (homography): ``(seed, test_seed,
            train_size, val_size, test_size) -> (train, val, test)`` datasets.
    """

    name: str
    in_channels: int
    canvas_size: int
    num_classes: int
    num_labels: int = 1
    # classification: (images, labels, *, seed, fresh) -> a Dataset of (x, y) with set_epoch(epoch);
    # registration: (n, *, seed, fresh, size) -> a Dataset of (pair, ground truth) with set_epoch(epoch)
    factory: Callable[..., Dataset] | None = field(default=None, repr=False, compare=False)
    task: str = "classification"
    dims: int = 2
    sizes: tuple[int, int] | None = None
    error_unit: str = field(default="%", repr=False)
    splits: Callable[..., tuple] | None = field(default=None, repr=False, compare=False)


def _distorted(name: str) -> DatasetInfo:
    def factory(images, labels, *, seed: int, fresh: bool = False) -> Dataset:
        return DistortedMNIST(name, images, labels, seed=seed, fresh=fresh)

    return DatasetInfo(name, 1, get_distortion(name).canvas_size, 10, 1, factory)


# the multi-digit tasks, each built by its own module in stnkit.data
_TASKS: dict[str, DatasetInfo] = {
    "addition": DatasetInfo(
        "addition", 2, get_distortion("rts").canvas_size, NUM_SUMS, num_labels=1, factory=AdditionMNIST.open
    ),
    "sequence": DatasetInfo("sequence", 1, SEQUENCE_CANVAS, 10, num_labels=SEQUENCE_LENGTH, factory=SequenceMNIST),
    # real photographs, not digits: (P_A, P_B) patch pairs -> the 8 corner offsets (stnkit.data.homography)
    "homography": DatasetInfo(
        "homography", 2, PATCH, 8, num_labels=1, task="homography", error_unit="px", splits=homography_splits
    ),
}


def _shapes(dims: int) -> DatasetInfo:
    def factory(n: int, *, seed: int, fresh: bool = False, size: int | None = None) -> Dataset:
        return ShapesPairs(dims, n, size=size, seed=seed, fresh=fresh)

    # 5 labels: background, the body, three blobs (ShapesPairs' default num_labels=4)
    name = f"shapes{dims}d"
    sizes = (256, 32) if dims == 2 else (64, 16)
    return DatasetInfo(name, 2, DEFAULT_SIZE[dims], 5, 1, factory, task="registration", dims=dims, sizes=sizes)


# the registration pairs (stnkit.data.shapes): 256 / 32 pairs of 128^2 images, 64 / 16 pairs of 64^3 volumes
_TASKS["shapes2d"] = _shapes(2)
_TASKS["shapes3d"] = _shapes(3)

DATASETS: tuple[str, ...] = tuple(DISTORTIONS) + tuple(_TASKS)
REGISTRATION_DATASETS: tuple[str, ...] = tuple(n for n, i in _TASKS.items() if i.task == "registration")


def dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of a dataset in :data:`DATASETS`."""
    check_choice("dataset", name, DATASETS)
    return _TASKS[name] if name in _TASKS else _distorted(name)


def open_dataset(name: str, images, labels, *, seed: int, fresh: bool = False) -> Dataset:
    """The dataset ``name`` built from source digits ``images`` ``(N, 28, 28)`` and ``labels`` ``(N,)``.

    Example:
        >>> from stnkit.data import load_digits
        >>> images, labels = load_digits("test")
        >>> ds = open_dataset("rts", images[:4], labels[:4], seed=0)
        >>> ds[0][0].shape
        torch.Size([1, 42, 42])
    """
    info = dataset_info(name)
    if info.task == "registration":
        raise ValueError(f"dataset {name!r} is a registration dataset, drawn from a seed: use open_pairs")
    if info.factory is None:
        raise ValueError(
            f"dataset {name!r} is not built from source digits: its splits come from DatasetInfo.splits "
            "(stnkit eval, show and predict do not read it yet; a run's test error is in its results.json)"
        )
    return info.factory(images, labels, seed=seed, fresh=fresh)


def open_pairs(name: str, n: int, *, seed: int, fresh: bool = False, size: int | None = None) -> Dataset:
    """The registration dataset ``name`` (one of :data:`REGISTRATION_DATASETS`): ``n`` pairs drawn from
    ``seed`` (afresh each epoch with ``fresh=True``), of side ``size`` (``None``: the dataset's default).

    Example:
        >>> ds = open_pairs("shapes2d", 2, seed=0, size=32)
        >>> ds[0][0].shape
        torch.Size([2, 32, 32])
    """
    check_choice("dataset", name, REGISTRATION_DATASETS)
    return dataset_info(name).factory(n, seed=seed, fresh=fresh, size=size)


__all__ = ["DATASETS", "REGISTRATION_DATASETS", "TASKS", "DatasetInfo", "dataset_info", "open_dataset", "open_pairs"]
