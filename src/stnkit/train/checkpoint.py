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
import math
import os
from pathlib import Path

import torch
from torch import nn

from .._io import atomic_path
from ..data import dataset_info
from ..models import create
from .config import TrainConfig

_META_KEY = "stnkit_config"
_DATA_KEY = "stnkit_data"


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


# what a checkpoint may say of its data (input from elsewhere: checked before anything is built)
MAX_CLASSES = 100_000
MAX_IMAGE_SIDE = 8192


def check_data_info(info: object, where: str = "data_info") -> dict:
    """The data a model was trained on, as a checkpoint records it for a run on your own images:
    ``{"classes": [names], "in_channels": 1 or 3, "image_size": [H, W], "mean": [C floats],
    "std": [C floats]}``. Anything else raises a ValueError naming ``where`` and the field."""
    if not isinstance(info, dict):
        raise ValueError(f"{where} must be a dict, got {type(info).__name__}")
    classes = info.get("classes")
    if (
        not isinstance(classes, list)
        or not 2 <= len(classes) <= MAX_CLASSES
        or not all(isinstance(c, str) for c in classes)
    ):
        raise ValueError(f"{where}: classes must be a list of 2 to {MAX_CLASSES:,} names")
    c = info.get("in_channels")
    if c not in (1, 3):
        raise ValueError(f"{where}: in_channels must be 1 or 3, got {c!r}")
    size = info.get("image_size")
    if (
        not isinstance(size, (list, tuple))
        or len(size) != 2
        or not all(isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= MAX_IMAGE_SIDE for s in size)
    ):
        raise ValueError(f"{where}: image_size must be [H, W] with sides in [1, {MAX_IMAGE_SIDE}], got {size!r}")
    for key, low in (("mean", None), ("std", 0.0)):
        v = info.get(key)
        if (
            not isinstance(v, list)
            or len(v) != c
            or not all(isinstance(a, (int, float)) and math.isfinite(a) and (low is None or a > low) for a in v)
        ):
            raise ValueError(f"{where}: {key} must be {c} finite numbers{' > 0' if low is not None else ''}, got {v!r}")
    return {
        "classes": list(classes),
        "in_channels": c,
        "image_size": [int(s) for s in size],
        "mean": [float(a) for a in info["mean"]],
        "std": [float(a) for a in info["std"]],
    }


def loc_downsample_for(config: TrainConfig, image_size) -> int:
    """The localisation net's downsampling on your own images: ``config.loc_downsample``, and at
    least enough that it reads at most 64 px on the longest side (224 x 224 -> 56 x 56)."""
    return max(config.loc_downsample, math.ceil(max(image_size) / 64))


def build_model(config: TrainConfig, data_info: dict | None = None) -> nn.Module:
    """The model a config describes (freshly initialised), sized for its dataset's canvas or, for a
    run on your own images, for the ``data_info`` it was trained with (:func:`check_data_info`):
    their channels, size and classes, with the training split's normalisation inside the model,
    after the transformers (so that what they sample outside the image is the raw background)."""
    if data_info is not None:
        info = check_data_info(data_info)
        return create(
            config.model,
            in_channels=info["in_channels"],
            in_size=tuple(info["image_size"]),
            num_classes=len(info["classes"]),
            transform=config.transform,
            num_transformers=config.num_transformers,
            st_size=config.st_size,
            bounded=config.bounded,
            loc_downsample=loc_downsample_for(config, info["image_size"]),
            dropout=config.dropout,
            hidden=config.hidden,
            tps_grid_size=config.tps_grid_size,
            ic_steps=config.ic_steps,
            backbone=config.backbone,
            normalize=(info["mean"], info["std"]),
        )
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
        backbone=config.backbone,
    )


def save_model(path: str | os.PathLike, model: nn.Module, config: TrainConfig, data_info: dict | None = None) -> Path:
    """Write ``model``'s weights, ``config`` and, for a run on your own images, its ``data_info``
    (classes, channels, size, normalisation) to a safetensors file (atomically)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        meta = {_META_KEY: json.dumps(config.to_dict())}
        if data_info is not None:
            meta[_DATA_KEY] = json.dumps(data_info)
        save_file(tensors, str(tmp), metadata=meta)
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

    Returns the model in eval mode and its :class:`TrainConfig` (:func:`load_run` also
    returns the data it was trained on).

    Raises:
        CheckpointError: the file is not one of the two formats (nothing is
            unpickled), or its weights do not fit the model its config describes.
        FileNotFoundError: no such file.
    """
    model, config, _ = load_run(path, map_location)
    return model, config


def load_run(path: str | os.PathLike, map_location: str = "cpu") -> tuple[nn.Module, TrainConfig, dict | None]:
    """:func:`load_model`, and the ``data_info`` of a run on your own images (classes, channels,
    size, normalisation; :func:`check_data_info`), ``None`` for a named dataset."""
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
        data_info = _data_info_of(path, meta.get(_DATA_KEY))
    else:
        ckpt = read_lightning_checkpoint(path, map_location)
        config = _config_of(path, ckpt["hyper_parameters"].get("config"))
        data_info = _data_info_of(path, ckpt["hyper_parameters"].get("data_info"))
        weights = ckpt.get("state_dict")
        if not isinstance(weights, dict):
            raise CheckpointError(f"{path}: not a checkpoint written by stnkit train (no state_dict)")
        state = {k.removeprefix("model."): v for k, v in weights.items()}
    if config.data is not None and data_info is None:
        raise CheckpointError(f"{path}: a run on your own images ({config.data}) without its data_info")
    model = build_model(config, data_info)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise CheckpointError(
            f"{path}: weights do not fit the {config.model} model its config describes ({first})"
        ) from None
    model.eval()
    return model, config, data_info


def _data_info_of(path: Path, data: object) -> dict | None:
    if data is None:
        return None
    try:
        if isinstance(data, str):
            data = json.loads(data)
        return check_data_info(data, f"{path}: its data_info")
    except ValueError as err:
        raise CheckpointError(str(err)) from None
