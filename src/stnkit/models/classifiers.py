"""The paper's classifiers (CNN, FCN) and the PyTorch tutorial's network, with their localisation nets."""

from __future__ import annotations

import math

from torch import Tensor, nn

from .._checks import check_input, check_size


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _pooled(n: int) -> int:
    return (n // 2) // 2


class CNN(nn.Module):
    """conv 9x9 -> pool -> ReLU -> conv 7x7 -> pool -> ReLU -> linear (three weight layers)."""

    def __init__(self, in_channels: int, in_size, num_classes: int = 10, channels=(32, 32), dropout: float = 0.0):
        super().__init__()
        h, w = check_size("in_size", in_size)
        self.in_shape = (in_channels, h, w)
        c1, c2 = channels
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 9, padding=4),
            nn.MaxPool2d(2),
            nn.ReLU(inplace=True),
            nn.Conv2d(c1, c2, 7, padding=3),
            nn.MaxPool2d(2),
            nn.ReLU(inplace=True),
            nn.Flatten(),
            nn.Dropout(dropout),
        )
        self.classifier = nn.Linear(c2 * _pooled(h) * _pooled(w), num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(check_input(x, self.in_shape)))


def _cnn_param_count(in_channels: int, h: int, w: int, num_classes: int, channels=(32, 32)) -> int:
    c1, c2 = channels
    feat = c2 * _pooled(h) * _pooled(w)
    return (in_channels * 81 + 1) * c1 + (c1 * 49 + 1) * c2 + (feat + 1) * num_classes


class FCN(nn.Module):
    """linear -> ReLU -> linear -> ReLU -> linear (two hidden layers)."""

    def __init__(
        self, in_channels: int, in_size, num_classes: int = 10, hidden: int | None = None, dropout: float = 0.0
    ):
        super().__init__()
        h, w = check_size("in_size", in_size)
        self.in_shape = (in_channels, h, w)
        d = in_channels * h * w
        if hidden is None:
            # match the CNN's parameter count: h^2 + (d + num_classes + 2) h + num_classes = target
            target = _cnn_param_count(in_channels, h, w, num_classes)
            b = d + num_classes + 2
            hidden = max(8, int((-b + math.sqrt(b * b + 4 * (target - num_classes))) / 2))
        self.hidden = hidden
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(d, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(check_input(x, self.in_shape))


def fc_localization(in_channels: int, in_size, width: int = 32) -> nn.Module:
    """The ST-FCN localisation net: three fully connected layers of ``width`` units (the head is added by ST)."""
    h, w = check_size("in_size", in_size)
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_channels * h * w, width),
        nn.ReLU(inplace=True),
        nn.Linear(width, width),
        nn.ReLU(inplace=True),
    )


def _tutorial_pooled(n: int, k1: int, k2: int) -> int:
    """Side after conv k1 (no padding) -> max-pool 2 -> conv k2 -> max-pool 2."""
    return ((n - k1 + 1) // 2 - k2 + 1) // 2


class TutorialCNN(nn.Module):
    """The PyTorch tutorial's classifier: conv 10@5x5 -> pool -> ReLU -> conv 20@5x5 -> 2-D dropout -> pool
    -> ReLU -> FC 50 -> ReLU -> dropout -> FC (dropout 0.5 both times, as in the tutorial)."""

    def __init__(self, in_channels: int, in_size, num_classes: int = 10):
        super().__init__()
        h, w = check_size("in_size", in_size)
        ph, pw = _tutorial_pooled(h, 5, 5), _tutorial_pooled(w, 5, 5)
        if ph < 1 or pw < 1:
            raise ValueError(f"in_size must be at least (16, 16) for the tutorial network, got {(h, w)}")
        self.in_shape = (in_channels, h, w)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 10, 5),
            nn.MaxPool2d(2),
            nn.ReLU(inplace=True),
            nn.Conv2d(10, 20, 5),
            nn.Dropout2d(0.5),
            nn.MaxPool2d(2),
            nn.ReLU(inplace=True),
            nn.Flatten(),
        )
        self.classifier = nn.Sequential(
            nn.Linear(20 * ph * pw, 50), nn.ReLU(inplace=True), nn.Dropout(0.5), nn.Linear(50, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(check_input(x, self.in_shape)))


def tutorial_localization(in_channels: int, in_size) -> nn.Module:
    """The tutorial's localisation net: conv 8@7x7 -> pool -> ReLU -> conv 10@5x5 -> pool -> ReLU -> FC 32 -> ReLU."""
    h, w = check_size("in_size", in_size)
    ph, pw = _tutorial_pooled(h, 7, 5), _tutorial_pooled(w, 7, 5)
    if ph < 1 or pw < 1:
        raise ValueError(f"in_size must be at least (20, 20) for the tutorial localisation net, got {(h, w)}")
    return nn.Sequential(
        nn.Conv2d(in_channels, 8, 7),
        nn.MaxPool2d(2),
        nn.ReLU(inplace=True),
        nn.Conv2d(8, 10, 5),
        nn.MaxPool2d(2),
        nn.ReLU(inplace=True),
        nn.Flatten(),
        nn.Linear(10 * ph * pw, 32),
        nn.ReLU(inplace=True),
    )
