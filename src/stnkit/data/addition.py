"""``addition``: the paper's MNIST addition task, two RTS digits in two channels, labelled by their sum.

Jaderberg et al. 2015, appendix A.1: "each digit is presented in a separate 42x42
input channel (giving 2-channel inputs), but each digit is transformed
independently, with random rotation, scale, and translation (RTS)"; the label is
the sum of the two digits, one of 19 classes (0 to 18).

Our spec of the pairing (the paper does not say how pairs were chosen): sample
``i`` shows source digit ``i`` in channel 0 and source digit ``partner[i]`` in
channel 1, ``partner`` a random permutation of the source digits; so in every draw
each digit appears once in each channel. Each channel is the ``rts`` recipe
(:func:`~stnkit.data.get_distortion`) with its own parameters. All of it is drawn
from one generator seeded by ``(seed, epoch)`` (:func:`~stnkit.data.dataset.stream_seed`):
the permutation first, then channel 0's distortions, then channel 1's.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .dataset import RedrawnDataset, as_digits, as_labels
from .distortions import DEFAULT_CHUNK, DIGIT_SIZE, Distortion, get_distortion

# digits per sample: one per channel
NUM_DIGITS = 2
# the sums of two digits: 0 .. 18
NUM_SUMS = 2 * 9 + 1


class AdditionMNIST(RedrawnDataset):
    """Pairs of RTS-distorted digits, one per channel, labelled by their sum.

    Args:
        images: ``(N, 28, 28)`` or ``(N, 1, 28, 28)`` source digits, uint8 or float in ``[0, 1]``.
        labels: ``(N,)`` integer labels of the source digits.
        seed: the seed of the pairing and the distortions (an int >= 0).
        fresh: ``False`` (test sets): one draw fixed by ``seed``. ``True`` (training):
            :meth:`set_epoch` re-draws the pairs and every distortion from ``(seed, epoch)``.
        chunk_size: samples rendered at once (no effect on the result).
        **recipe_options: override the ``rts`` recipe's defaults (angle, scale, canvas_size).

    ``ds[i]`` is ``(image, label)``: float32 ``(2, S, S)`` in ``[0, 1]`` and an int64
    scalar in ``[0, 18]``. The current draw: ``ds.images`` ``(N, 2, S, S)``, ``ds.labels``
    ``(N,)``; its ground truth: ``ds.pairs`` ``(N, 2)`` (the source digit of each
    channel), ``ds.digit_labels`` ``(N, 2)`` (their labels) and ``ds.params``
    ``(N, 2, 4)`` (each channel's warp in family ``ds.transform``, output canvas ->
    digit, as :class:`~stnkit.data.DistortedMNIST` records it).

    Example:
        >>> from stnkit.data import load_digits
        >>> images, labels = load_digits("test")
        >>> ds = AdditionMNIST(images[:8], labels[:8], seed=0)
        >>> ds[0][0].shape, tuple(ds.params.shape), bool((ds.labels == ds.digit_labels.sum(1)).all())
        (torch.Size([2, 42, 42]), (8, 2, 4), True)
    """

    def __init__(
        self,
        images: object,
        labels: object,
        seed: int = 0,
        fresh: bool = False,
        *,
        chunk_size: int = DEFAULT_CHUNK,
        **recipe_options,
    ):
        self.distortion: Distortion = get_distortion("rts", **recipe_options)
        self.digits = as_digits(images)
        self.source_labels = as_labels(labels, self.digits.shape[0])
        self._init_draws(seed, fresh)
        self.chunk_size = chunk_size
        self.images: Tensor
        self.params: Tensor
        self.pairs: Tensor
        self.digit_labels: Tensor
        self.labels: Tensor
        self._redraw(0 if fresh else None)

    @classmethod
    def open(cls, images, labels, *, seed: int, fresh: bool = False) -> AdditionMNIST:
        """The registry's factory (:func:`~stnkit.data.open_dataset`)."""
        return cls(images, labels, seed=seed, fresh=fresh)

    @property
    def name(self) -> str:
        return "addition"

    @property
    def transform(self) -> str:
        return self.distortion.transform

    @property
    def canvas_size(self) -> int:
        return self.distortion.canvas_size

    def __repr__(self) -> str:
        return (
            f"AdditionMNIST(n={len(self)}, seed={self.seed}, fresh={self.fresh}, epoch={self.epoch}, "
            f"canvas_size={self.canvas_size}, transform={self.transform!r})"
        )

    def _redraw(self, epoch: int | None) -> None:
        g = self._generator(epoch)
        n = self.digits.shape[0]
        self.pairs = torch.stack([torch.arange(n), torch.randperm(n, generator=g)], dim=1)
        channels, params = [], []
        for k in range(NUM_DIGITS):
            img, p = self.distortion(self.digits[self.pairs[:, k]], g, chunk_size=self.chunk_size)
            channels.append(img)
            params.append(p)
        self.images = torch.cat(channels, dim=1)
        self.params = torch.stack(params, dim=1)
        self.digit_labels = self.source_labels[self.pairs]
        self.labels = self.digit_labels.sum(1)
        self.epoch = epoch

    def canonicalize(self, images: Tensor | None = None) -> Tensor:
        """Each channel of the current samples (or ``images`` ``(N, 2, S, S)``) warped back onto its
        digit's 28x28 frame with the recorded ground truth: ``(N, 2, 28, 28)``."""
        images = self.images if images is None else images
        return torch.cat(
            [
                self.distortion.canonicalize(images[:, k : k + 1], self.params[:, k], DIGIT_SIZE)
                for k in range(NUM_DIGITS)
            ],
            dim=1,
        )


__all__ = ["NUM_SUMS", "AdditionMNIST"]
