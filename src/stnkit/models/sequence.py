"""Digit-sequence models (Sonderby et al. 2015): logits ``(B, num_labels, num_classes)``.

* ``seq-cnn``: :class:`SequenceCNN`, a CNN on the whole canvas with one output head per digit.
* ``seq-st-cnn``: one affine spatial transformer (identity at initialisation) that
  downsamples the canvas, then the same CNN (the paper's CNN-SPN).
* ``rnn-spn``: :class:`RecurrentSPN`, the recurrent spatial transformer: a GRU over CNN
  features of the whole canvas emits, at each of ``num_labels`` steps, an affine
  transform that crops one digit; a classifier shared across steps reads each crop.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._checks import check_input, check_int, check_number, check_size
from ..geometry import get_transform, warp
from ..nn import default_localization


def _conv_block(c_in: int, c_out: int, k: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, k, padding=k // 2), nn.MaxPool2d(2), nn.ReLU(inplace=True)]


class SequenceCNN(nn.Module):
    """conv 5x5 (32) -> pool -> conv 5x5 (32) -> pool -> conv 3x3 (32) -> pool -> FC 256 -> one
    linear head of ``num_classes`` per label (all ReLU; max-pool 2). Logits ``(B, num_labels, num_classes)``."""

    def __init__(
        self, in_channels: int, in_size, num_labels: int = 3, num_classes: int = 10, dropout: float = 0.0, width=32
    ):
        super().__init__()
        h, w = check_size("in_size", in_size)
        self.in_shape = (in_channels, h, w)
        self.num_labels, self.num_classes = check_int("num_labels", num_labels), check_int("num_classes", num_classes)
        self.features = nn.Sequential(
            *_conv_block(in_channels, width, 5), *_conv_block(width, width, 5), *_conv_block(width, width, 3)
        )
        fh, fw = h // 8, w // 8
        if min(fh, fw) < 1:
            raise ValueError(f"in_size must be at least (8, 8) for the sequence CNN, got {(h, w)}")
        self.hidden = nn.Sequential(
            nn.Flatten(), nn.Linear(width * fh * fw, 256), nn.ReLU(inplace=True), nn.Dropout(dropout)
        )
        self.heads = nn.Linear(256, num_labels * num_classes)  # the heads side by side

    def forward(self, x: Tensor) -> Tensor:
        z = self.hidden(self.features(check_input(x, self.in_shape)))
        return self.heads(z).view(-1, self.num_labels, self.num_classes)


class DigitClassifier(nn.Module):
    """The classifier RNN-SPN shares across steps: conv 5x5 (32) -> pool -> conv 5x5 (32) -> pool
    -> FC 256 -> FC ``num_classes`` (ReLU between); logits ``(B, num_classes)``."""

    def __init__(self, in_channels: int, in_size, num_classes: int = 10, dropout: float = 0.0, width: int = 32):
        super().__init__()
        h, w = check_size("in_size", in_size)
        self.in_shape = (in_channels, h, w)
        if min(h, w) < 4:
            raise ValueError(f"in_size must be at least (4, 4) for the digit classifier, got {(h, w)}")
        self.net = nn.Sequential(
            *_conv_block(in_channels, width, 5),
            *_conv_block(width, width, 5),
            nn.Flatten(),
            nn.Linear(width * (h // 4) * (w // 4), 256),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(256, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def initial_windows(num_steps: int, scale: float = 0.4, dtype=torch.float32) -> Tensor:
    """The affine parameters ``(num_steps, 6)`` RNN-SPN's steps start from.

    Step ``k`` reads a square window of ``scale`` times the canvas side, centred
    vertically and at the centre of the ``k``-th of ``num_steps`` equal vertical
    strips: ``[[scale, 0, c_k], [0, scale, 0]]`` with ``c_k = -1 + (2k + 1) / num_steps``
    (normalised coordinates, output -> input). For 3 steps on the 100x100 canvas:
    40x40-pixel windows centred at x = 16.7, 50, 83.3 pixels, where the three
    side-by-side digits lie on average.

    >>> initial_windows(3)[:, 2]
    tensor([-0.6667,  0.0000,  0.6667])
    """
    k = torch.arange(num_steps, dtype=torch.float64)
    cx = -1.0 + (2.0 * k + 1.0) / num_steps
    z = torch.zeros_like(cx)
    s = torch.full_like(cx, scale)
    return torch.stack([s, z, cx, z, s, z], dim=1).to(dtype)


class RecurrentSPN(nn.Module):
    """The recurrent spatial transformer (RNN-SPN) of Sonderby et al. 2015.

    A localisation CNN (:func:`~stnkit.nn.default_localization`: two 5x5 conv layers
    of 20 filters with max-pooling, FC 50) encodes the whole canvas (area-downsampled
    to ``loc_size``) once into ``c``; a GRU cell with ``hidden`` units reads ``c`` at
    each of ``num_steps`` steps, ``h_k = GRU(c, h_{k-1})`` from ``h_0 = 0``; a linear
    layer (zero weights at initialisation) maps ``h_k`` to an offset from step ``k``'s
    learned start window (initialised to :func:`initial_windows`), giving affine
    parameters ``theta_k``. The canvas is warped by ``theta_k`` to ``crop_size``
    (:func:`~stnkit.geometry.warp`, bilinear) and one :class:`DigitClassifier`, shared
    by all steps, classifies every crop.

    So every step starts as its fixed window whatever the input. Logits
    ``(B, num_steps, num_classes)``; :meth:`attend` gives the crops and parameters.
    """

    def __init__(
        self,
        in_channels: int,
        in_size,
        num_steps: int = 3,
        num_classes: int = 10,
        crop_size=28,
        loc_size=None,
        hidden: int = 128,
        dropout: float = 0.0,
        window: float = 0.4,
    ):
        super().__init__()
        h, w = check_size("in_size", in_size)
        self.in_shape = (in_channels, h, w)
        self.num_steps = check_int("num_steps", num_steps)
        self.crop_size = check_size("crop_size", crop_size)
        self.loc_size = (h, w) if loc_size is None else check_size("loc_size", loc_size)
        self.family = get_transform("affine")
        self.localization, features = default_localization(in_channels, self.loc_size)
        self.rnn = nn.GRUCell(features, check_int("hidden", hidden))
        self.head = nn.Linear(hidden, self.family.num_params, bias=False)
        # flat, like a bias: the optimiser's weight decay (>= 2-D tensors) must not pull it to the zero transform
        self.start = nn.Parameter(initial_windows(num_steps, check_number("window", window, low=1e-3)).flatten())
        self.classifier = DigitClassifier(in_channels, self.crop_size, num_classes, dropout)
        self.reset_head()

    def reset_head(self) -> None:
        """Zero the step head's weights: every step's transform is its start window."""
        nn.init.zeros_(self.head.weight)

    def predict_params(self, x: Tensor) -> Tensor:
        """The affine parameters ``(B, num_steps, 6)`` of every step."""
        loc_in = x if tuple(x.shape[-2:]) == self.loc_size else nn.functional.adaptive_avg_pool2d(x, self.loc_size)
        c = self.localization(loc_in)
        h = c.new_zeros(c.shape[0], self.rnn.hidden_size)
        params = []
        for k in range(self.num_steps):
            h = self.rnn(c, h)
            params.append(self.start.view(self.num_steps, -1)[k] + self.head(h))
        return torch.stack(params, dim=1)

    def attend(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The crops ``(B, num_steps, C, *crop_size)`` and parameters ``(B, num_steps, 6)``."""
        x = check_input(x, self.in_shape)
        params = self.predict_params(x)
        b, k = params.shape[:2]
        xs = x.unsqueeze(1).expand(-1, k, -1, -1, -1).reshape(b * k, *x.shape[1:])
        crops = warp(xs, params.reshape(b * k, -1), self.family, out_size=self.crop_size)
        return crops.view(b, k, *crops.shape[1:]), params

    def forward(self, x: Tensor) -> Tensor:
        crops, _ = self.attend(x)
        b, k = crops.shape[:2]
        return self.classifier(crops.flatten(0, 1)).view(b, k, -1)


__all__ = ["DigitClassifier", "RecurrentSPN", "SequenceCNN", "initial_windows"]
