"""Building, saving and loading trained models, without Lightning (no unpickling of untrusted files).

:func:`build_model` makes the model a :class:`TrainConfig` describes. Two formats load:

* ``.safetensors`` written by :func:`save_model`: the weights plus the training
  configuration as JSON metadata.
* Lightning ``.ckpt`` files written by ``stnkit train``: read with
  ``torch.load(weights_only=True)``, which refuses arbitrary Python objects.

Nothing else loads: a file that is neither (a pickle of other objects, a truncated
or random file, a directory) raises :class:`CheckpointError` with one line that
says what the file is not; stnkit never falls back to unpickling it.

Every checkpoint is a file from elsewhere, checked before anything it declares is
allocated: only a regular file is opened (a FIFO, a device or a directory is named
as what it is, and nothing blocks); a safetensors header's length and its tensors'
declared sizes are checked against the file's size and :data:`MAX_CHECKPOINT_BYTES`
before a tensor is read; a ``.ckpt`` (a zip) has its entries' declared sizes and
compression ratios checked before ``torch.load`` inflates any; the stored config
must describe a model whose every weight has the file's shape (checked on the
``meta`` device, before the model is built); and every weight must be finite.
"""

from __future__ import annotations

import json
import math
import os
import stat
import zipfile
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from .._io import atomic_path
from ..data import dataset_info
from ..data.idx import ImageFileError, open_regular
from ..models import create, model_spec
from .config import TrainConfig

_META_KEY = "stnkit_config"
_DATA_KEY = "stnkit_data"
# a model of the user's own (stnkit.train.fit): its class, which stnkit cannot build
_OWN_KEY = "stnkit_own_model"


class CheckpointError(ValueError):
    """A file that is not a stnkit checkpoint (or not one of the model asked for); nothing was unpickled."""


def _not_a_checkpoint(path: Path) -> CheckpointError:
    return CheckpointError(
        f"{path} is not a stnkit checkpoint (safetensors or a weights-only Lightning checkpoint); "
        "stnkit will not unpickle it"
    )


# what a checkpoint may declare (a file from elsewhere: checked before anything is allocated).
# stnkit's models hold a few MB of weights; a Lightning .ckpt adds the optimiser's state (2x)
MAX_CHECKPOINT_BYTES = 4 << 30  # the tensors (uncompressed zip entries) of one checkpoint
MAX_SAFETENSORS_HEADER = 100_000_000  # safetensors' own limit on its JSON header
MAX_ZIP_ENTRIES = 100_000  # a .ckpt has one entry per tensor storage, and a few more
# torch.save stores its zip entries uncompressed; an entry over _RATIO_FLOOR bytes that inflates
# more than this is a zip bomb (deflate's best is ~1030x)
MAX_COMPRESSION_RATIO = 100
_RATIO_FLOOR = 1 << 20
# the thin-plate spline's control points per side a stored config may ask for (the paper: 4; the
# model holds a (k^2 + 3)^2 float64 system, built when the model is)

# safetensors dtypes -> bytes per element
_ST_ITEMSIZE = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip
_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _check_file(path: Path) -> os.stat_result:
    """``path``'s stat (following symbolic links): a regular file, or one line saying what it is."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise FileNotFoundError(
                f"checkpoint {path} is a symbolic link to {os.readlink(path)}, which does not exist"
            ) from None
        raise FileNotFoundError(f"checkpoint {path} does not exist") from None
    if not stat.S_ISREG(st.st_mode):
        raise CheckpointError(f"checkpoint {path} is {_kind(st.st_mode)}, not a file")
    return st


@contextmanager
def _open_checkpoint(path: Path):
    """``path`` opened for reading if it is a regular file (stat first, then opened non-blocking and
    checked again, so a FIFO swapped in between never blocks), with its size."""
    _check_file(path)
    try:
        f = open_regular(path, "a checkpoint")
    except ImageFileError:
        _check_file(path)  # it changed in between: say what it is now
        raise
    with f:
        yield f, os.fstat(f.fileno()).st_size


def _check_zip(f, path: Path, size: int) -> None:
    """Refuse a zip whose entries declare more than :data:`MAX_CHECKPOINT_BYTES` or inflate absurdly,
    from the central directory alone (nothing is inflated). ``f`` is left at its start."""
    try:
        end = zipfile._EndRecData(f)  # the end record: entry count and directory size, before they are read
    except (AttributeError, OSError):  # pragma: no cover (a zipfile without it: the directory is bounded below)
        end = None
    if end is not None and end[zipfile._ECD_ENTRIES_TOTAL] > MAX_ZIP_ENTRIES:
        raise CheckpointError(
            f"{path}: a zip of {end[zipfile._ECD_ENTRIES_TOTAL]:,} entries; a checkpoint has at most "
            f"{MAX_ZIP_ENTRIES:,} (a corrupt or hostile file)"
        )
    f.seek(0)
    try:
        with zipfile.ZipFile(f) as z:
            infos = z.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError):
        raise _not_a_checkpoint(path) from None
    if len(infos) > MAX_ZIP_ENTRIES:
        raise CheckpointError(f"{path}: a zip of {len(infos):,} entries; a checkpoint has at most {MAX_ZIP_ENTRIES:,}")
    total = 0
    for info in infos:
        if info.file_size > _RATIO_FLOOR and info.file_size > MAX_COMPRESSION_RATIO * max(info.compress_size, 1):
            raise CheckpointError(
                f"{path}: zip entry {info.filename} inflates {info.compress_size:,} bytes to {info.file_size:,} "
                f"(more than {MAX_COMPRESSION_RATIO}x; torch.save stores its entries uncompressed): a zip bomb?"
            )
        total += info.file_size
    if total > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(
            f"{path}: its zip entries declare {total:,} bytes uncompressed, more than the {MAX_CHECKPOINT_BYTES:,} "
            "stnkit reads (MAX_CHECKPOINT_BYTES)"
        )
    f.seek(0)


def _torch_load(path: Path, map_location) -> object:
    """``torch.load(weights_only=True)`` of a checked regular file: a zip's declared sizes first; a
    legacy (non-zip) file holds its tensors raw, so its size bounds them."""
    with _open_checkpoint(path) as (f, size):
        if zipfile.is_zipfile(f):
            _check_zip(f, path, size)
        elif size > MAX_CHECKPOINT_BYTES:
            raise CheckpointError(
                f"{path}: {size:,} bytes, more than the {MAX_CHECKPOINT_BYTES:,} stnkit reads (MAX_CHECKPOINT_BYTES)"
            )
        f.seek(0)
        try:
            return torch.load(f, map_location=map_location, weights_only=True)
        except Exception:  # torch's message advises weights_only=False: never show it
            raise _not_a_checkpoint(path) from None


def _safetensors_header(path: Path) -> tuple[dict, dict[str, tuple[int, ...]]]:
    """The metadata and the tensors' shapes a safetensors file declares, checked against its size and
    :data:`MAX_CHECKPOINT_BYTES` (the header is read, no tensor)."""
    bad = f"{path} is not a readable safetensors file"
    with _open_checkpoint(path) as (f, size):
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{bad} (truncated: {size} bytes; its header's length alone takes 8)")
        n = int.from_bytes(head, "little")
        if n > MAX_SAFETENSORS_HEADER:
            raise CheckpointError(
                f"{bad} (its header declares {n:,} bytes; expected at most {MAX_SAFETENSORS_HEADER:,})"
            )
        if 8 + n > size:
            raise CheckpointError(f"{bad} (truncated: its header declares {n:,} bytes, the file holds {size - 8:,})")
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError):
        raise CheckpointError(f"{bad} (its header is not JSON: corrupt)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{bad} (its header is JSON {type(header).__name__}, not an object)")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise CheckpointError(f"{bad} (its __metadata__ is not a map of strings)")
    room, total, shapes = size - 8 - n, 0, {}
    for name, entry in header.items():
        entry = entry if isinstance(entry, dict) else {}
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if (
            dtype not in _ST_ITEMSIZE
            or not isinstance(shape, list)
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
            or not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]
        ):
            raise CheckpointError(
                f"{bad} (tensor {name!r}: a dtype, shape and data_offsets expected, got {entry!r:.200})"
            )
        nbytes = math.prod(shape) * _ST_ITEMSIZE[dtype]  # a Python int: no overflow
        if offsets[1] - offsets[0] != nbytes:
            raise CheckpointError(
                f"{bad} (tensor {name!r}: shape {tuple(shape)} of {dtype} is {nbytes:,} bytes, "
                f"its data_offsets hold {offsets[1] - offsets[0]:,})"
            )
        if offsets[1] > room:
            raise CheckpointError(
                f"{bad} (truncated: tensor {name!r} ends at byte {offsets[1]:,} of the data, the file holds {room:,})"
            )
        total += nbytes
        shapes[name] = tuple(shape)
    if total > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(
            f"{path}: its tensors declare {total:,} bytes, more than the {MAX_CHECKPOINT_BYTES:,} stnkit reads "
            "(MAX_CHECKPOINT_BYTES)"
        )
    return meta, shapes


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
    ckpt = _torch_load(path, map_location)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("hyper_parameters"), dict):
        raise CheckpointError(f"{path}: not a checkpoint written by stnkit train") from None
    return ckpt


def _config_of(path: Path, data: object) -> TrainConfig:
    try:
        if isinstance(data, str):
            data = json.loads(data)
        config = TrainConfig.from_dict(data)
    except (KeyError, TypeError, ValueError, RecursionError) as err:
        raise CheckpointError(f"{path}: not a checkpoint written by stnkit train (its config: {err})") from None
    return config  # TrainConfig's own bounds (MAX_TPS_GRID_SIZE, MAX_TRANSFORMERS, ...) apply


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


def check_model_task(config: TrainConfig) -> str:
    """The task of ``config.model`` (the registry's), refused in one line when ``config.dataset`` is a
    dataset of another task (a classifier on registration pairs, a homography network on digits)."""
    info = dataset_info(config.dataset)
    task = model_spec(config.model).task
    if task != info.task:
        raise ValueError(
            f"model {config.model!r} learns {task} and dataset {config.dataset!r} is a {info.task} dataset: "
            f"choose a {task} dataset for it (or another model)"
        )
    return task


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
    task = check_model_task(config)
    if task == "registration":
        size = info.canvas_size if config.volume_size is None else config.volume_size
        return create(
            config.model,
            in_channels=info.in_channels,
            in_size=(size,) * info.dims,
            transform=config.transform,
            pre_affine=config.pre_affine,
        )
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


def save_model(
    path: str | os.PathLike,
    model: nn.Module,
    config: TrainConfig,
    data_info: dict | None = None,
    own_model: bool = False,
) -> Path:
    """Write ``model``'s weights, ``config`` and, for a run on your own images, its ``data_info``
    (classes, channels, size, normalisation) to a safetensors file (atomically). ``own_model``:
    the weights of a model of yours (:func:`stnkit.train.fit`), which only your code can rebuild."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        meta = {_META_KEY: json.dumps(config.to_dict())}
        if data_info is not None:
            meta[_DATA_KEY] = json.dumps(data_info)
        if own_model:
            meta[_OWN_KEY] = type(model).__name__
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
    path = Path(path)
    meta, _ = _safetensors_header(path)
    if _META_KEY not in meta:
        raise CheckpointError(f"{path}: not an stnkit file (no {_META_KEY!r} metadata)")
    try:
        info = json.loads(meta[_META_KEY])
    except (ValueError, RecursionError):
        raise CheckpointError(f"{path}: its {_META_KEY!r} metadata is not JSON") from None
    return _read_safetensors(path, "cpu"), info


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


def _refuse_own_model(path: Path, own: object) -> None:
    if own:
        raise CheckpointError(
            f"{path} holds the weights of a model of your own ({own}, trained by stnkit.train.fit): build it "
            "and load them with model.load_state_dict(safetensors.torch.load_file(path)), or the .ckpt's state_dict"
        )


def load_run(path: str | os.PathLike, map_location: str = "cpu") -> tuple[nn.Module, TrainConfig, dict | None]:
    """:func:`load_model`, and the ``data_info`` of a run on your own images (classes, channels,
    size, normalisation; :func:`check_data_info`), ``None`` for a named dataset."""
    path = Path(path)
    _check_file(path)
    if path.suffix == ".safetensors":
        meta, shapes = _safetensors_header(path)  # the config and the shapes, before any tensor is read
        if _META_KEY not in meta:
            raise CheckpointError(f"{path}: not an stnkit model file (no {_META_KEY!r} metadata)")
        _refuse_own_model(path, meta.get(_OWN_KEY))
        config = _config_of(path, meta[_META_KEY])
        data_info = _data_info_of(path, meta.get(_DATA_KEY))
        _check_data_info_needed(path, config, data_info)
        _check_shapes(path, config, data_info, shapes)
        state = _read_safetensors(path, map_location)
    else:
        ckpt = read_lightning_checkpoint(path, map_location)
        _refuse_own_model(path, ckpt["hyper_parameters"].get("own_model"))
        config = _config_of(path, ckpt["hyper_parameters"].get("config"))
        data_info = _data_info_of(path, ckpt["hyper_parameters"].get("data_info"))
        weights = ckpt.get("state_dict")
        if not isinstance(weights, dict) or not all(torch.is_tensor(v) for v in weights.values()):
            raise CheckpointError(f"{path}: not a checkpoint written by stnkit train (no state_dict of tensors)")
        state = {k.removeprefix("model."): v for k, v in weights.items()}
        _check_data_info_needed(path, config, data_info)
        _check_shapes(path, config, data_info, {k: tuple(v.shape) for k, v in state.items()})
    _check_finite(path, state)
    model = _build(path, config, data_info)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise CheckpointError(
            f"{path}: weights do not fit the {config.model} model its config describes ({first})"
        ) from None
    model.eval()
    return model, config, data_info


def _read_safetensors(path: Path, device) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    _check_file(path)  # safe_open opens the path itself: still a regular file
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except Exception:  # safetensors' own error for a truncated or foreign file
        raise CheckpointError(f"{path} is not a readable safetensors file (truncated or corrupt)") from None


def _check_data_info_needed(path: Path, config: TrainConfig, data_info: dict | None) -> None:
    if config.data is not None and data_info is None:
        raise CheckpointError(f"{path}: a run on your own images ({config.data}) without its data_info")


def _build(path: Path, config: TrainConfig, data_info: dict | None) -> nn.Module:
    try:
        return build_model(config, data_info)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: its config describes no model stnkit builds ({err})") from None


def _check_shapes(path: Path, config: TrainConfig, data_info: dict | None, shapes: dict) -> None:
    """The model the config describes, built on the ``meta`` device (no memory), must have exactly the
    file's weights: a config that asks for a huge model is refused before it is built."""
    from ..geometry import families

    families._cached_family.cache_clear()  # the families made on meta must not serve real models
    try:
        with torch.device("meta"):
            skeleton = _build(path, config, data_info)
        expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    except CheckpointError:
        raise
    except Exception:  # pragma: no cover (a module that cannot be built on meta: the real build checks)
        return
    finally:
        families._cached_family.cache_clear()
    missing = [k for k in expected if k not in shapes]
    unexpected = [k for k in shapes if k not in expected]
    wrong = [k for k in expected if k in shapes and shapes[k] != expected[k]]
    if missing or unexpected or wrong:
        if wrong:
            k = wrong[0]
            detail = f"size mismatch for {k}: the file has {shapes[k]}, the model {expected[k]}"
        elif missing:
            detail = f"missing key(s) in the file: {', '.join(missing[:3])}"
        else:
            detail = f"unexpected key(s) in the file: {', '.join(unexpected[:3])}"
        raise CheckpointError(f"{path}: weights do not fit the {config.model} model its config describes ({detail})")


def _check_finite(path: Path, state: dict) -> None:
    """Every floating weight finite, else one line naming the first that is not (before a model is built)."""
    for name, value in state.items():
        if value.is_floating_point() and not bool(value.isfinite().all()):
            bad = int((~value.isfinite()).sum())
            raise CheckpointError(
                f"{path}: weight {name} holds {bad:,} NaN or inf value(s) of {value.numel():,}; "
                "a model with non-finite weights answers nothing meaningful"
            )


def _data_info_of(path: Path, data: object) -> dict | None:
    if data is None:
        return None
    try:
        if isinstance(data, str):
            data = json.loads(data)
        return check_data_info(data, f"{path}: its data_info")
    except ValueError as err:
        raise CheckpointError(str(err)) from None
