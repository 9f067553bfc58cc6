"""Every dataset stnkit trains on, by name: the distorted-MNIST recipes, the multi-digit tasks and
the homography patches of real photographs (:mod:`.homography`).

A dataset is built from 28x28 source digits (``images``, ``labels``) and a ``seed``;
``fresh=True`` re-draws it every epoch (:meth:`set_epoch`), ``fresh=False`` keeps one
fixed draw (validation and test). :func:`dataset_info` says what a model needs to know
about it: input channels, canvas size, classes and labels per sample, and the task's loss and
error (a dataset not built from digits, such as ``homography``, gives its splits itself).

>>> dataset_info("rts")
DatasetInfo(name='rts', in_channels=1, canvas_size=42, num_classes=10, num_labels=1)
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


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset.

    Attributes:
        name: the dataset's name (``stnkit train --dataset NAME``).
        in_channels: channels of each sample.
        canvas_size: height and width of each sample (square canvases).
        num_classes: classes of each label.
        num_labels: labels per sample: 1 (a class index ``()``) or more (``(num_labels,)``, e.g. a digit sequence).
        loss: the training loss of the task, a name of ``stnkit.train.losses.LOSSES``:
            ``"cross_entropy"`` (classes; error in %) or ``"corners"`` (``num_classes`` numbers
            regressed, the four corner offsets of a homography; error: mean corner error in px).
            A model may declare a loss of its own (``ModelSpec.loss``).
        error_unit: the unit of the task's error (``"%"``, ``"px"``).
        splits: for a dataset not built from source digits: ``(seed, test_seed, train_size,
            val_size, test_size) -> (train, val, test)`` datasets.
    """

    name: str
    in_channels: int
    canvas_size: int
    num_classes: int
    num_labels: int = 1
    # (images, labels, *, seed, fresh) -> a Dataset of (x, y) with set_epoch(epoch)
    factory: Callable[..., Dataset] | None = field(default=None, repr=False, compare=False)
    loss: str = field(default="cross_entropy", repr=False)
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
        "homography", 2, PATCH, 8, num_labels=1, loss="corners", error_unit="px", splits=homography_splits
    ),
}

DATASETS: tuple[str, ...] = tuple(DISTORTIONS) + tuple(_TASKS)


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
    if info.factory is None:
        raise ValueError(
            f"dataset {name!r} is not built from source digits: its splits come from DatasetInfo.splits "
            "(stnkit eval, show and predict do not read it yet; a run's test error is in its results.json)"
        )
    return info.factory(images, labels, seed=seed, fresh=fresh)


__all__ = ["DATASETS", "DatasetInfo", "dataset_info", "open_dataset"]
