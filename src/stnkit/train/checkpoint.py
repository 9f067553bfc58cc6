"""Building, saving and loading trained models, without Lightning (no unpickling of untrusted files).

:func:`build_model` makes the model a :class:`TrainConfig` describes. Two formats load:

* ``.safetensors`` written by :func:`save_model`: the weights plus the training
  configuration as JSON metadata.
* Lightning ``.ckpt`` files written by ``stnkit train``: read with
  ``torch.load(weights_only=True)``, which refuses arbitrary Python objects.

Nothing else loads: a file that is neither (a pickle of other objects, a truncated
or random file, a directory) raises :class:`CheckpointError` with one line that
says what the file is not; stnkit never falls back to unpickling it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from .._io import atomic_path
from ..data import dataset_info
from ..models import create
from .config import TrainConfig

_META_KEY = "stnkit_config"


class CheckpointError(ValueError):
    """A file that is not a stnkit checkpoint (or not one of the model asked for); nothing was unpickled."""


def _not_a_checkpoint(path: Path) -> CheckpointError:
    return CheckpointError(
        f"{path} is not a stnkit checkpoint (safetensors or a weights-only Lightning checkpoint); "
        "stnkit will not unpickle it"
    )


def _check_file(path: Path) -> None:
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory, not a file")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")


def read_lightning_checkpoint(path: str | os.PathLike, map_location: str = "cpu") -> dict:
    """The dict in a Lightning ``.ckpt``, read with ``torch.load(weights_only=True)``.

    Raises:
        CheckpointError: the file holds Python objects a weights-only load refuses,
            is truncated or corrupt, or is not a dict with stnkit's training config.
        FileNotFoundError: no such file.
    """
    path = Path(path)
    _check_file(path)
    if path.suffix == ".safetensors":
        raise CheckpointError(f"{path} holds only weights; a Lightning .ckpt (OUT/checkpoints/last.ckpt) is needed")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception:  # torch's message advises weights_only=False: never show it
        raise _not_a_checkpoint(path) from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("hyper_parameters"), dict):
        raise CheckpointError(f"{path}: not a checkpoint written by stnkit train") from None
    return ckpt


def _config_of(path: Path, data: object) -> TrainConfig:
    try:
        if isinstance(data, str):
            data = json.loads(data)
        return TrainConfig.from_dict(data)
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: not a checkpoint written by stnkit train (its config: {err})") from None


def build_model(config: TrainConfig) -> nn.Module:
    """The model a config describes, sized for its dataset's canvas (freshly initialised)."""
    info = dataset_info(config.dataset)
    return create(
        config.model,
        in_channels=info.in_channels,
        in_size=info.canvas_size,
        num_classes=info.num_classes,
        transform=config.transform,
        num_transformers=config.num_transformers,
        st_size=config.st_size,
        bounded=config.bounded,
        loc_downsample=config.loc_downsample,
        dropout=config.dropout,
        hidden=config.hidden,
        tps_grid_size=config.tps_grid_size,
        ic_steps=config.ic_steps,
        num_labels=info.num_labels,
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


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """Write named tensors and a JSON-able ``meta`` dict to a safetensors file (atomically).

    The plain-loop trainers (``stnkit reproduce colocalization``) keep their
    per-epoch state this way: weights, optimiser buffers and counters, never a pickle.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={_META_KEY: json.dumps(meta)})
    return path


def load_tensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """The tensors and ``meta`` of a file written by :func:`save_tensors`.

    Raises:
        CheckpointError: not a readable safetensors file, or one without stnkit metadata.
        FileNotFoundError: no such file.
    """
    from safetensors import safe_open

    path = Path(path)
    _check_file(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except Exception:  # safetensors' own error for a truncated or foreign file
        raise CheckpointError(f"{path} is not a readable safetensors file (truncated or corrupt)") from None
    if _META_KEY not in meta:
        raise CheckpointError(f"{path}: not an stnkit file (no {_META_KEY!r} metadata)")
    try:
        return tensors, json.loads(meta[_META_KEY])
    except ValueError:
        raise CheckpointError(f"{path}: its {_META_KEY!r} metadata is not JSON") from None


def checkpoint_config(path: str | os.PathLike) -> TrainConfig:
    """The training configuration stored in a Lightning checkpoint (read with ``weights_only=True``)."""
    path = Path(path)
    ckpt = read_lightning_checkpoint(path)
    return _config_of(path, ckpt["hyper_parameters"].get("config"))


def load_model(path: str | os.PathLike, map_location: str = "cpu") -> tuple[nn.Module, TrainConfig]:
    """Load a model and its training configuration from ``.safetensors`` or ``.ckpt``.

    Returns the model in eval mode and its :class:`TrainConfig`.

    Raises:
        CheckpointError: the file is not one of the two formats (nothing is
            unpickled), or its weights do not fit the model its config describes.
        FileNotFoundError: no such file.
    """
    path = Path(path)
    _check_file(path)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt", device=map_location) as f:
                meta = f.metadata() or {}
                state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
        except Exception:  # safetensors' own error for a truncated or foreign file
            raise CheckpointError(f"{path} is not a readable safetensors file (truncated or corrupt)") from None
        if _META_KEY not in meta:
            raise CheckpointError(f"{path}: not an stnkit model file (no {_META_KEY!r} metadata)")
        config = _config_of(path, meta[_META_KEY])
    else:
        ckpt = read_lightning_checkpoint(path, map_location)
        config = _config_of(path, ckpt["hyper_parameters"].get("config"))
        weights = ckpt.get("state_dict")
        if not isinstance(weights, dict):
            raise CheckpointError(f"{path}: not a checkpoint written by stnkit train (no state_dict)")
        state = {k.removeprefix("model."): v for k, v in weights.items()}
    model = build_model(config)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise CheckpointError(
            f"{path}: weights do not fit the {config.model} model its config describes ({first})"
        ) from None
    model.eval()
    return model, config
