"""``DistortedMNIST``: a torch Dataset of distorted digits with their ground truth."""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .._checks import check_int
from .distortions import DEFAULT_CHUNK, DIGIT_SIZE, Distortion, check_digits, get_distortion
from .ink import ink_fraction
from .mnist import load_digits

SEED_STRIDE = 1_000_003  # generator seed = seed * SEED_STRIDE + slot
MAX_EPOCH = SEED_STRIDE - 2


def stream_seed(seed: int, epoch: int | None) -> int:
    """The ``torch.Generator`` seed of one draw.

    Fixed sets (``epoch=None``) use slot 0 of the seed's block, training epoch
    ``e`` uses slot ``e + 1``: so a fixed test set never repeats the distortions
    of a training epoch with the same seed.
    """
    check_int("seed", seed, low=0)
    if epoch is None:
        return seed * SEED_STRIDE
    check_int("epoch", epoch, low=0, high=MAX_EPOCH)
    return seed * SEED_STRIDE + epoch + 1


def as_digits(images: object, name: str = "images") -> Tensor:
    """Digits as float32 ``(N, 1, 28, 28)`` in ``[0, 1]`` from uint8 (0..255) or float (0..1), numpy or torch."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, Tensor):
        raise TypeError(f"{name} must be a numpy array or torch.Tensor, got {type(images).__name__}")
    if images.ndim == 3:
        images = images.unsqueeze(1)
    if images.ndim != 4 or tuple(images.shape[1:]) != (1, DIGIT_SIZE, DIGIT_SIZE) or images.shape[0] == 0:
        raise ValueError(f"{name} must have shape (N, 28, 28) or (N, 1, 28, 28) with N > 0, got {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    if images.is_floating_point():
        return check_digits(images.float(), name)
    raise TypeError(f"{name} must be uint8 (0..255) or floating (0..1), got dtype {images.dtype}")


def as_labels(labels: object, n: int) -> Tensor:
    """Digit labels as int64 ``(n,)`` from an integer numpy array or tensor."""
    if isinstance(labels, np.ndarray):
        labels = torch.from_numpy(labels)
    if not isinstance(labels, Tensor) or labels.is_floating_point() or labels.is_complex():
        raise TypeError(f"labels must be an integer numpy array or tensor, got {type(labels).__name__}")
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
    return labels.to(torch.int64)


def check_fresh(fresh: object) -> bool:
    if not isinstance(fresh, bool):
        raise TypeError(f"fresh must be a bool, got {type(fresh).__name__}")
    return fresh


class RedrawnDataset(Dataset):
    """The draws of a dataset rendered from source digits by a generator seeded by ``(seed, epoch)``
    (:func:`stream_seed`): fixed (``fresh=False``, one draw) or drawn afresh each epoch (``fresh=True``).

    A subclass sets ``digits`` (the sources, one sample each), calls :meth:`_init_draws` and
    implements ``_redraw(epoch)``, which sets ``images``, ``labels`` (and its ground truth)
    from :meth:`_generator` and then ``epoch``. ``ds[i]`` is ``(images[i], labels[i])``.
    """

    digits: Tensor
    images: Tensor
    labels: Tensor

    def _init_draws(self, seed: int, fresh: bool) -> None:
        """Check and keep ``seed`` and ``fresh``; no draw yet."""
        self.fresh = check_fresh(fresh)
        stream_seed(seed, None)  # validates seed
        self.seed = seed
        self.epoch: int | None = None

    def _generator(self, epoch: int | None) -> torch.Generator:
        """The generator of the draw for ``epoch`` (``None``: the fixed draw)."""
        return torch.Generator().manual_seed(stream_seed(self.seed, epoch))

    def _redraw(self, epoch: int | None) -> None:
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        """Re-draw every sample for ``epoch`` (``fresh=True``); a no-op for fixed sets."""
        stream_seed(self.seed, epoch)  # validates epoch
        if self.fresh and epoch != self.epoch:
            self._redraw(epoch)

    def __len__(self) -> int:
        return self.digits.shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.images[index], self.labels[index]


class DistortedMNIST(RedrawnDataset):
    """Distorted digits from any source of 28x28 digits, with ground-truth parameters.

    Args:
        name: one of :data:`~stnkit.data.DISTORTIONS` (``mnist``, ``r``, ``rts``, ``p``, ``e``, ``tc``).
        images: ``(N, 28, 28)`` or ``(N, 1, 28, 28)`` digits, uint8 or float in
            ``[0, 1]``, numpy or torch (bundled, from a directory, or your own).
        labels: ``(N,)`` integer labels.
        seed: the seed of the distortions (an int >= 0).
        fresh: ``False`` (test sets): one draw fixed by ``seed``. ``True``
            (training): :meth:`set_epoch` re-draws every distortion from
            ``(seed, epoch)``, so the data are distorted afresh each epoch.
        clutter_source: for ``tc``, digits to cut clutter from (default: ``images``,
            each sample's clutter from the other digits).
        chunk_size: samples rendered at once (bounds memory; no effect on the result).
        **recipe_options: override the recipe's defaults (see :func:`~stnkit.data.get_distortion`).

    ``ds[i]`` is ``(image, label)``: float32 ``(1, S, S)`` in ``[0, 1]`` and an int64
    scalar. The current draw is ``ds.images`` ``(N, 1, S, S)`` with ground truth
    ``ds.params`` ``(N, P)`` in family ``ds.transform``; ``ds.digits`` are the sources.

    The current draw is held in memory as float32: ``N * S * S * 4`` bytes (the
    bundled 7,000 ``rts`` digits: 49 MB; full MNIST ``tc``: 0.86 GB).

    With ``DataLoader(num_workers > 0)``, call :meth:`set_epoch` before iterating
    and keep ``persistent_workers=False`` (the default), so that workers copy the
    new draw.
    """

    def __init__(
        self,
        name: str,
        images: object,
        labels: object,
        seed: int = 0,
        fresh: bool = False,
        *,
        clutter_source: object | None = None,
        chunk_size: int = DEFAULT_CHUNK,
        **recipe_options,
    ):
        self.distortion: Distortion = get_distortion(name, **recipe_options)
        self.digits = as_digits(images)
        self.labels = as_labels(labels, self.digits.shape[0])
        self._init_draws(seed, fresh)
        self.chunk_size = chunk_size
        self.clutter_source = None if clutter_source is None else as_digits(clutter_source, "clutter_source")
        self.images: Tensor
        self.params: Tensor
        self._redraw(0 if fresh else None)

    # -- description ---------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.distortion.name

    @property
    def transform(self) -> str:
        return self.distortion.transform

    @property
    def canvas_size(self) -> int:
        return self.distortion.canvas_size

    @property
    def num_params(self) -> int:
        return self.distortion.num_params

    def __repr__(self) -> str:
        return (
            f"DistortedMNIST({self.name!r}, n={len(self)}, seed={self.seed}, fresh={self.fresh}, "
            f"epoch={self.epoch}, canvas_size={self.canvas_size}, transform={self.transform!r})"
        )

    # -- draws -------------------------------------------------------------------------------------
    def _redraw(self, epoch: int | None) -> None:
        self.images, self.params = self.distortion(
            self.digits, self._generator(epoch), clutter_source=self.clutter_source, chunk_size=self.chunk_size
        )
        self.epoch = epoch

    # -- ground truth ------------------------------------------------------------------------------
    def ink_fraction(self) -> Tensor:
        """Per sample, the fraction of the warped digit's ink that lies on the canvas."""
        return ink_fraction(
            self.digits, self.params, self.distortion.family, self.canvas_size, mode=self.distortion.mode
        )

    def canonicalize(self, images: Tensor | None = None) -> Tensor:
        """The current samples (or ``images``) warped back onto the digits' frame with the ground truth."""
        return self.distortion.canonicalize(self.images if images is None else images, self.params)


def load_distorted(
    name: str,
    split: str = "test",
    seed: int = 0,
    *,
    data_dir: str | os.PathLike | None = None,
    n: int | None = None,
    fresh: bool | None = None,
    **recipe_options,
) -> DistortedMNIST:
    """A distorted-MNIST split: training data afresh each epoch, test data fixed by ``seed``.

    ``data_dir=None`` uses the bundled digits (7,000 / 1,000); ``n`` keeps the first
    ``n`` digits of the split; ``fresh`` defaults to ``split == "train"``.
    """
    images, labels = load_digits(split, data_dir)
    if n is not None:
        check_int("n", n, low=1, high=images.shape[0])
        images, labels = images[:n], labels[:n]
    fresh = split == "train" if fresh is None else fresh
    return DistortedMNIST(name, images, labels, seed=seed, fresh=fresh, **recipe_options)


__all__ = ["DistortedMNIST", "RedrawnDataset", "as_digits", "as_labels", "check_fresh", "load_distorted", "stream_seed"]
