"""Every dataset stnkit trains on, by name: the distorted-MNIST recipes and the multi-digit tasks.

A dataset is built from 28x28 source digits (``images``, ``labels``) and a ``seed``;
``fresh=True`` re-draws it every epoch (:meth:`set_epoch`), ``fresh=False`` keeps one
fixed draw (validation and test). :func:`dataset_info` says what a model needs to know
about it: input channels, canvas size, classes and labels per sample.

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
    """

    name: str
    in_channels: int
    canvas_size: int
    num_classes: int
    num_labels: int = 1
    # (images, labels, *, seed, fresh) -> a Dataset of (x, y) with set_epoch(epoch)
    factory: Callable[..., Dataset] | None = field(default=None, repr=False, compare=False)


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
    return dataset_info(name).factory(images, labels, seed=seed, fresh=fresh)


__all__ = ["DATASETS", "DatasetInfo", "dataset_info", "open_dataset"]
