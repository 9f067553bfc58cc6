"""HomographyNet: the corner regressor of deep homography estimation (DeTone et al. 2016).

The paper's network (section 3): eight 3x3 convolutions with batch normalisation and ReLU,
64-64-128-128 channels in pairs with a 2x2 max-pool after each pair but the last, a
1024-unit fully connected layer with dropout, and 8 outputs (the four corner offsets),
on a 2-channel 128x128 input (``P_A``, ``P_B``). On 2 CPU cores that network (about
2.4 GFLOP a pair forward) trains far too slowly, so stnkit's is smaller, and says so:
the same VGG pattern of 3x3 convolutions with normalisation, ReLU and 2x2
max-pools, but group normalisation instead of batch normalisation (per sample, so that
photographs of another contrast see the statistics they are trained with), one convolution per stage, five stages of ``widths`` (16-32-64-64-128)
down to 4x4, and a 256-unit fully connected layer (about 57 M multiply-adds a pair), with
leaky ReLUs (see below).

``standardize=True`` (the default) standardises each input channel per sample (its own mean and
standard deviation over the patch) before the first convolution, and the nonlinearities are
``LeakyReLU(leak)`` (``leak=0.1`` by default; ``leak=0`` is the ReLU). Both against one failure:
with ReLUs, the zero-initialised last layer and Adam, most units die in the first steps (after 200
Adam steps at 1e-3 on 64 training pairs, 82 % of the hidden layer's ReLUs were zero for every one of
them; 16 % with ``leak=0.1``), and the runs trained that way predicted the mean offset, the
identity (24.5 px on the test pairs; ``docs/results/homography.md``). A leaky unit pushed below
zero still passes a gradient and can come back (``tests/models/test_homography_net.py``).

The output is offsets in pixels: the last layer's result times ``scale`` (``RHO``, 32
px). Its weights and bias start at zero, so that an untrained network predicts the
identity (all offsets zero).
"""

from __future__ import annotations

import torch  # noqa: F401  (used by the doctest)
from torch import Tensor, nn

from .._checks import check_input, check_int, check_number, check_size

HOMOGRAPHY_WIDTHS = (16, 32, 64, 64, 128)
# channels are normalised per sample in groups (GroupNorm), not over the batch: with BatchNorm's
# running statistics the validation photographs' error rose from epoch 2 on (25.1 -> 27.9 px at
# epoch 5) while it was 21.8 px with the batch's own statistics (the photographs differ in contrast)
_GROUPS = 8
# added to each channel's standard deviation (grey levels in [0, 1]): a flat patch stays finite
_STD_FLOOR = 1e-3


def _act(leak: float) -> nn.Module:
    return nn.LeakyReLU(leak) if leak > 0 else nn.ReLU()


class HomographyNet(nn.Module):
    """A VGG-like regressor of the four corner offsets (``(B, 8)`` px) from a ``(P_A, P_B)`` pair.

    Args:
        in_channels: 2 (the two patches stacked).
        in_size: the patches' ``(H, W)`` (128): divisible by ``2 ** len(widths)``.
        num_outputs: 8 (``(dx, dy)`` of four corners).
        widths: channels of each stage (one 3x3 convolution, group norm, leaky ReLU, 2x2 max-pool).
        hidden: the fully connected layer's width.
        dropout: before the last layer (the paper: 0.5).
        scale: the outputs' unit (the raw outputs times ``scale`` are pixels).
        standardize: standardise each input channel per sample (zero mean, unit standard deviation
            over the patch) before the first convolution.
        leak: the negative slope of the leaky ReLUs, in ``[0, 1)`` (0: the plain ReLU).

    Example:
        >>> net = HomographyNet()
        >>> net(torch.rand(2, 2, 128, 128)).abs().max().item()  # the identity at initialisation
        0.0
    """

    def __init__(
        self,
        in_channels: int = 2,
        in_size: int | tuple[int, int] = 128,
        num_outputs: int = 8,
        widths: tuple[int, ...] = HOMOGRAPHY_WIDTHS,
        hidden: int = 256,
        dropout: float = 0.0,
        scale: float = 32.0,
        standardize: bool = True,
        leak: float = 0.1,
    ):
        super().__init__()
        check_int("in_channels", in_channels)
        check_int("num_outputs", num_outputs)
        h, w = check_size("in_size", in_size)
        if check_number("leak", leak, low=0.0, high=1.0) == 1.0:
            raise ValueError(f"leak must be in [0, 1), got {leak!r}")
        k = 2 ** len(widths)
        if h % k or w % k:
            raise ValueError(f"in_size must be divisible by {k} (2 ** len(widths)), got {(h, w)}")
        layers: list[nn.Module] = []
        c = in_channels
        for width in widths:
            norm = nn.GroupNorm(min(_GROUPS, width), width)
            layers += [nn.Conv2d(c, width, 3, padding=1, bias=False), norm, _act(leak), nn.MaxPool2d(2)]
            c = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(c * (h // k) * (w // k), hidden), _act(leak), nn.Dropout(dropout)
        )
        self.out = nn.Linear(hidden, num_outputs)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.scale = float(scale)
        self.standardize = bool(standardize)
        self.leak = float(leak)
        self.in_shape = (in_channels, h, w)

    def forward(self, x: Tensor) -> Tensor:
        x = check_input(x, self.in_shape)
        if self.standardize:
            mean = x.mean(dim=(-2, -1), keepdim=True)
            std = x.std(dim=(-2, -1), keepdim=True)
            x = (x - mean) / (std + _STD_FLOOR)
        return self.out(self.head(self.features(x))) * self.scale


__all__ = ["HOMOGRAPHY_WIDTHS", "HomographyNet"]
