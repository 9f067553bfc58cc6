"""The training engine, with PyTorch Lightning underneath (needs ``stnkit[train]``).

* :func:`fit` trains any ``nn.Module`` on any map-style datasets of ``(image, label)``.
* :func:`train` trains a built-in model (:mod:`stnkit.models`) as a :class:`TrainConfig`
  says, on a named dataset or on your own images (``TrainConfig(data=...)``).

Both write a run directory with checkpoints (exact resume), ``model.safetensors``,
metrics, ``config.yaml`` and ``results.json``, and fit ``max_time`` minutes when asked.
Loading and evaluating a trained model (:mod:`.checkpoint`, :mod:`.evaluate`) needs no
Lightning.
"""

from .config import TrainConfig

__all__ = ["TrainConfig", "fit", "train"]


def __getattr__(name: str):
    # fit and train need Lightning, an optional dependency: imported when first used, so that
    # loading a checkpoint (stnkit.train.checkpoint) works without it
    if name in ("fit", "train"):
        from . import run

        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
