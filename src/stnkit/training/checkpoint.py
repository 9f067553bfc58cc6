"""Building, saving and loading trained models, without Lightning (no unpickling of untrusted files).

:func:`build_model` makes the model a :class:`TrainConfig` describes. Two formats load:

* ``.safetensors`` written by :func:`save_model`: the weights plus the training
  configuration as JSON metadata.
* Lightning ``.ckpt`` files written by ``stnkit train``: read with
  ``torch.load(weights_only=True)``, which refuses arbitrary Python objects.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from .._io import atomic_path
from ..data import get_distortion
from ..models import create
from .config import TrainConfig

_META_KEY = "stnkit_config"


def build_model(config: TrainConfig) -> nn.Module:
    """The model a config describes, sized for its dataset's canvas (freshly initialised)."""
    canvas = get_distortion(config.dataset).canvas_size
    return create(
        config.model,
        in_channels=1,
        in_size=canvas,
        transform=config.transform,
        num_transformers=config.num_transformers,
        st_size=config.st_size,
        bounded=config.bounded,
        loc_downsample=config.loc_downsample,
        dropout=config.dropout,
        hidden=config.hidden,
        tps_grid_size=config.tps_grid_size,
    )


def save_model(path: str | os.PathLike, model: nn.Module, config: TrainConfig) -> Path:
    """Write ``model``'s weights and ``config`` to a safetensors file (atomically)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={_META_KEY: json.dumps(config.to_dict())})
    return path


def checkpoint_config(path: str | os.PathLike) -> TrainConfig:
    """The training configuration stored in a Lightning checkpoint (read with ``weights_only=True``)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    try:
        return TrainConfig.from_dict(ckpt["hyper_parameters"]["config"])
    except (KeyError, TypeError):
        raise ValueError(f"{path}: not a checkpoint written by stnkit train") from None


def load_model(path: str | os.PathLike, map_location: str = "cpu") -> tuple[nn.Module, TrainConfig]:
    """Load a model and its training configuration from ``.safetensors`` or ``.ckpt``.

    Returns the model in eval mode and its :class:`TrainConfig`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt", device=map_location) as f:
            meta = f.metadata() or {}
            if _META_KEY not in meta:
                raise ValueError(f"{path}: not an stnkit model file (no {_META_KEY!r} metadata)")
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
        config = TrainConfig.from_dict(json.loads(meta[_META_KEY]))
    else:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
        try:
            config = TrainConfig.from_dict(ckpt["hyper_parameters"]["config"])
            state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()}
        except (KeyError, TypeError):
            raise ValueError(f"{path}: not a checkpoint written by stnkit train") from None
    model = build_model(config)
    model.load_state_dict(state)
    model.eval()
    return model, config
