"""Training and evaluation with PyTorch Lightning (needs ``stnkit[train]``)."""

from .config import TrainConfig

__all__ = ["TrainConfig"]
