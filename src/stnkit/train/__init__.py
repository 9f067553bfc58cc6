"""Training with PyTorch Lightning (needs ``stnkit[train]``); loading and evaluating a trained
model (:mod:`.checkpoint`, :mod:`.evaluate`) needs no Lightning."""

from .config import TrainConfig

__all__ = ["TrainConfig"]
