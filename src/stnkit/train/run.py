"""Training runs: :func:`fit` trains any model on any datasets, :func:`train` a built-in model on a
named dataset or on your own images; both write the same run directory.

The pieces they rely on live by concern: the resume policy in :mod:`.resume`,
provenance (commit, weight digest) in :mod:`.provenance`, the callbacks in
:mod:`.callbacks`, the data modules in :mod:`.datamodule`, the tables of finished runs in
:mod:`.report`.

A run directory ``OUT`` holds ``checkpoints/{best-*,last}.ckpt`` (Lightning's, read
back with ``weights_only=True``), ``model.safetensors`` (the best weights by validation
error, with the config), ``logs/version_*/metrics.csv`` (one version per start or
resume), ``config.yaml`` (the options that reproduce the run), ``results.json`` and,
for built-in models, ``show.png`` and ``confusion.png``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import shutil
import signal
import sys
import threading
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_only
from torch import nn
from torch.utils.data import default_collate

from .._io import atomic_write_text
from ..data import AdditionMNIST, DistortedMNIST, dataset_info
from ..data.folder import ImageData, channel_stats, open_image_data
from ..models import STClassifier, count_parameters, row_key
from .budget import dataset_batch, draw_seconds, plan_epochs, plan_length
from .callbacks import Diagnostics, EpochLines, Replan, TransformerImages, WallClock
from .checkpoint import check_model_task, checkpoint_config, load_run, read_lightning_checkpoint, save_model
from .config import TrainConfig
from .datamodule import DataModule, DistortedMNISTDataModule, PairsDataModule, check_split_sizes
from .evaluate import (
    channel_pose_spread,
    confusion_png,
    evaluate,
    evaluate_dataset,
    evaluate_homography,
    evaluate_registration,
    pose_spread,
)
from .module import STNModule
from .provenance import git_commit, param_digest
from .resume import check_resumable, resume_checkpoint
from .safety import AtomicCheckpointIO, NoteInterrupt, PinThreads, TrainingInterrupted, interrupted_message
from .show import model_registration_figure, show_figure

# what a run writes into OUT: --overwrite removes these, and only these, of an earlier run
RUN_OUTPUTS = (
    "checkpoints",
    "logs",
    "tb",
    "ddp",
    "results.json",
    "model.safetensors",
    "budget.json",
    "config.yaml",
    "show.png",
    "confusion.png",
)


def _devices(value: str):
    return int(value) if value.isdigit() else value


def _write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def is_rank_zero() -> bool:
    return getattr(rank_zero_only, "rank", 0) == 0


def train(
    config: TrainConfig,
    out: str | os.PathLike,
    resume: bool | str = False,
    quiet: bool = False,
    overwrite: bool = False,
) -> dict:
    """Train the built-in model ``config`` describes, evaluate it on the test split, write the run to ``out``.

    The data: a named dataset (``config.dataset``, from the bundled digits or
    ``config.data_dir``), or your own images (``config.data``: an image folder or a CSV
    manifest, :func:`stnkit.data.open_image_data`; classes, channels and size from the
    data, normalisation statistics from the training split, all kept in the checkpoint).

    ``resume=True`` continues from ``out/checkpoints/last.ckpt`` (a path resumes from
    that file). A directory that already holds a run is refused unless ``resume`` or
    ``overwrite`` (which deletes the earlier run's outputs first).

    With ``config.deterministic`` on CPU, two runs of the same config with the same
    number of torch threads (``results["num_threads"]``) end with identical weights and
    results, and so does a run killed at any moment and resumed: the distortions, the
    order of the samples and the steps' random numbers are functions of (seed, epoch),
    and a resume restarts the interrupted epoch from the last epoch-end checkpoint.
    """
    threads_before = torch.get_num_threads()
    try:
        return _train(config, out, resume, quiet, overwrite)
    finally:
        torch.set_num_threads(threads_before)  # PinThreads may have changed it


def fit(
    model: nn.Module,
    train_data,
    val_data=None,
    config: TrainConfig | dict | None = None,
    *,
    test_data=None,
    out: str | os.PathLike = "runs/fit",
    resume: bool | str = False,
    overwrite: bool = False,
    quiet: bool = False,
) -> dict:
    """Train any ``nn.Module`` classifier on map-style datasets of ``(image, label)``, with Lightning.

    ``config`` (a :class:`TrainConfig` or a dict of its options) gives the optimisation
    (``optimizer``, ``lr``, ``schedule``, ``epochs`` or ``max_time`` minutes, ``batch_size``,
    ``loc_lr_mult`` for the ``transformer`` of an :class:`~stnkit.nn.STClassifier`,
    ``coverage_weight``, ...) and the run (``seed``, ``deterministic``, ``accelerator``,
    ...); its data and model options are not read: you give the model and the data.

    A dataset with a ``set_epoch(epoch)`` method is told each epoch before it is read
    (draw augmentations from ``(seed, epoch)`` there, and a resumed run is exact). Writes
    the run directory ``out`` as :func:`train` does (checkpoints, ``model.safetensors``,
    metrics, ``config.yaml``, ``results.json``). The model is trained in place and left
    in eval mode with the best weights by validation error (the last ones without
    ``val_data``); ``resume=True`` continues ``out``'s run (build the same model first).

    Returns the results: ``best_val_error`` (%), ``test_error`` (% with ``test_data``),
    ``epochs``, ``global_step``, ``fit_seconds``, ``num_parameters``, ...

    Example:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> from stnkit.nn import with_transformer
        >>> from stnkit.models import CNN
        >>> model = with_transformer(CNN(1, 16, num_classes=3), in_channels=1, in_size=(16, 16))
        >>> data = TensorDataset(torch.rand(24, 1, 16, 16), torch.randint(0, 3, (24,)))
        >>> import tempfile; out = tempfile.mkdtemp()
        >>> results = fit(model, data, data, {"epochs": 1, "batch_size": 8}, out=out, quiet=True)
        >>> results["epochs"], results["global_step"]
        (1, 3)
    """
    if config is None:
        config = TrainConfig()
    elif isinstance(config, dict):
        config = TrainConfig().replace(**config)
    elif not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, a dict of its options or None, got {type(config).__name__}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    for name, data in (("train_data", train_data), ("val_data", val_data), ("test_data", test_data)):
        if data is not None and not (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
            raise TypeError(
                f"{name} must be a map-style dataset (with __getitem__ and __len__), got {type(data).__name__}"
            )
    if len(train_data) == 0:
        raise ValueError("train_data is empty")
    check_devices(config)
    threads_before = torch.get_num_threads()
    try:
        out = Path(out)
        ckpt_path = _prepare(out, config, resume, overwrite)
        data = DataModule(config, train_data, val_data, test_data)
        pl.seed_everything(config.seed, workers=True, verbose=False)
        budget = None
        if config.max_time is not None:
            x, y = default_collate([train_data[i] for i in range(min(config.batch_size, len(train_data)))])
            budget = _budget_plan(config, out, ckpt_path, lambda: (model, x, y, len(train_data), len(val_data or [])))
            config = config.replace(epochs=plan_length(budget))
        module = STNModule(model, config, own_model=True)
        run = _fit(module, data, config, out, ckpt_path, quiet, budget, has_val=val_data is not None, own_model=True)
        if run is None:
            return {}
        trainer, best_path, results = run
        state = read_lightning_checkpoint(best_path)["state_dict"]
        model.load_state_dict({k.removeprefix("model."): v for k, v in state.items()})
        model.eval()
        save_model(out / "model.safetensors", model, run_config(config, budget), own_model=True)
        if test_data is not None and len(test_data):
            result = evaluate_dataset(model, test_data, batch_size=config.batch_size)
            results.update(test_error=result["error"], test_size=result["n"])
        results.update(
            train_size=len(train_data),
            val_size=len(val_data) if val_data is not None else 0,
            num_parameters=count_parameters(model),
            data_source="datasets given to stnkit.train.fit",
            config=run_config(config, budget).to_dict(),
        )
        _write_json(out / "results.json", results)
        return results
    finally:
        torch.set_num_threads(threads_before)


def check_devices(config: TrainConfig) -> None:
    """Refuse, before Lightning waits for them forever, more devices than this machine has: CPU
    processes beyond its cores, GPUs beyond those torch sees."""
    if not config.devices.isdigit():
        return
    n = int(config.devices)
    gpus = torch.cuda.device_count()
    if config.accelerator in ("gpu", "cuda") or (config.accelerator == "auto" and gpus):
        if n > gpus:
            raise ValueError(f"devices must be at most {gpus} (the GPUs torch sees here), got {n}")
    elif config.num_nodes == 1 and n > (os.cpu_count() or 1):
        raise ValueError(f"devices must be at most {os.cpu_count()} (this machine's CPU cores), got {n}")


def run_config(config: TrainConfig, budget: dict | None) -> TrainConfig:
    """``config`` with the epochs the run trains (a ``--max-time`` run's re-plan, once made)."""
    return config if budget is None else config.replace(epochs=plan_length(budget))


# what stnkit writes inside the folders of RUN_OUTPUTS (glob patterns, relative to the folder)
_RUN_FILES = {
    "checkpoints": ("*.ckpt", "*.ckpt.part"),
    "logs": ("version_*/metrics.csv", "version_*/hparams.yaml", "version_*/*.part"),
    "tb": ("version_*/events.out.tfevents.*", "version_*/hparams.yaml"),
    "ddp": ("rank*.json", "rank*.json.part"),
}


def _not_ours(folder: Path) -> Path | None:
    """The first file (or folder) under ``folder`` that stnkit did not write, if any."""
    patterns = _RUN_FILES[folder.name]
    for path in sorted(folder.rglob("*")):
        if path.is_dir() and not path.is_symlink():
            if folder.name in ("logs", "tb") and path.parent == folder and path.name.startswith("version_"):
                continue
            return path
        rel = path.relative_to(folder)
        if path.is_symlink() or not any(rel.match(p) for p in patterns):
            return path
    return None


def _prepare(out: Path, config: TrainConfig, resume, overwrite: bool) -> Path | None:
    """Refuse (or, with ``overwrite``, clear) an earlier run in ``out``; the checkpoint to resume from.

    ``overwrite`` removes only what stnkit wrote (:data:`RUN_OUTPUTS`, and inside their folders only
    stnkit's own files); a file of yours among them is never deleted: the run is refused, naming it.
    A resume continues the run that was started: its checkpoint's options or, when it was stopped
    before its first checkpoint, those of its ``config.yaml``."""
    if not os.fspath(out) or os.fspath(out) == ".":
        raise ValueError(f"out must name a run directory, got {os.fspath(out)!r}")
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file, not a directory")
    earlier = [out / n for n in RUN_OUTPUTS if (out / n).exists() or (out / n).is_symlink()]
    # under DDP the other ranks start once rank 0 has begun writing the run: they follow it
    if earlier and not resume and is_rank_zero():
        if not overwrite:
            raise FileExistsError(
                f"{out} already holds a run: pass --resume to continue it or --overwrite to start again"
            )
        for p in earlier:
            theirs = p if p.is_symlink() or (p.is_dir() and p.name not in _RUN_FILES) else None
            if theirs is None and p.is_dir():
                theirs = _not_ours(p)
            if theirs is not None:
                raise FileExistsError(
                    f"--overwrite removes only files stnkit wrote, and {theirs} is not one of them; "
                    "move it or use another --out"
                )
        for p in earlier:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    ckpt_path = resume_checkpoint(out, resume)
    if ckpt_path is not None:
        check_resumable(checkpoint_config(ckpt_path), config, ckpt_path)
    elif resume and (out / "config.yaml").is_file():  # stopped before its first checkpoint
        check_resumable(read_run_config(out / "config.yaml"), config, out / "config.yaml")
    return ckpt_path


def read_run_config(path: Path) -> TrainConfig:
    """The :class:`TrainConfig` of a run's ``config.yaml`` (written when it started)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
        if isinstance(data, dict) and isinstance(data.get("image_size"), list):
            data["image_size"] = tuple(data["image_size"])
        return TrainConfig.from_dict(data)
    except (yaml.YAMLError, TypeError, ValueError, AttributeError) as err:
        raise ValueError(f"{path}: not the config.yaml of a stnkit run ({' '.join(str(err).split())[:160]})") from None


def image_data(config: TrainConfig) -> ImageData:
    """The splits of ``config.data`` (your own images), as ``stnkit train --data`` reads them."""
    return open_image_data(
        config.data,
        # without --image-size, images of several sizes are resized to their median size
        image_size=config.image_size or "median",
        seed=config.seed,
        distort=config.distort,
        test_seed=config.test_seed,
    )


def _one_size(images: ImageData) -> bool:
    """Whether every image of ``images`` already has its size (nothing was resized)."""
    from ..data.folder import read_image_header

    h, w = images.image_size
    return all(
        (hd.height, hd.width) == (h, w)
        for ds in (images.train, images.val, images.test)
        for hd in map(read_image_header, ds.paths)
    )


def data_info_of(images: ImageData) -> dict:
    """What a model trained on your images keeps of them: classes, channels, size, and the training
    split's per-channel mean and std (computed on the undistorted images)."""
    if len(images.train) == 0:
        raise ValueError(f"--data {images.source} has no training images (a train/ folder or a split column)")
    if len(images.classes) < 2:
        raise ValueError(
            f"--data {images.source} has {len(images.classes)} class ({', '.join(map(repr, images.classes))}); "
            "a classifier needs at least 2 class folders (or labels)"
        )
    plain = copy.copy(images.train)
    plain.distort = None
    mean, std = channel_stats(plain)
    return {
        "classes": list(images.classes),
        "in_channels": images.in_channels,
        "image_size": list(images.image_size),
        "mean": [round(float(m), 6) for m in mean],
        "std": [round(float(s), 6) for s in std],
    }


def _train(config: TrainConfig, out, resume, quiet: bool, overwrite: bool) -> dict:
    from .checkpoint import build_model

    check_devices(config)
    git_commit()  # the code this run starts with (cached): an edit while it trains does not change the record
    out = Path(out)
    ckpt_path = _prepare(out, config, resume, overwrite)
    info = None
    if config.data is not None:
        images = image_data(config)
        info = data_info_of(images)
        if config.image_size is None and not _one_size(images):
            print(
                f"images of --data {config.data} differ in size: all resized to {images.image_size[0]}x"
                f"{images.image_size[1]} (their median height and width); --image-size H W chooses"
            )
        if ckpt_path is not None:
            saved = read_lightning_checkpoint(ckpt_path)["hyper_parameters"].get("data_info")
            if saved is not None and saved["classes"] != info["classes"]:
                raise ValueError(f"cannot resume {ckpt_path}: the classes of --data {config.data} have changed")
        data = DataModule(config, images.train, images.val if len(images.val) else None, images.test)
    elif dataset_info(config.dataset).task == "registration":  # synthetic pairs, drawn from the seeds
        if config.max_time is not None:
            raise ValueError(f"max_time is not planned for registration ({config.dataset}): give epochs instead")
        build_model(config)  # a model of another task, or a size it cannot take: refused before any output
        data = PairsDataModule(config)
    elif dataset_info(config.dataset).splits is not None:  # a dataset not built from digits (homography)
        check_model_task(config)
        if config.max_time is not None:
            raise ValueError(
                f"max_time is not planned for dataset {config.dataset!r} yet: give epochs, got {config.max_time}"
            )
        splits = dataset_info(config.dataset).splits
        data = DataModule(
            config, *splits(config.seed, config.test_seed, config.train_size, config.val_size, config.test_size)
        )
    else:
        check_model_task(config)
        if config.data_dir is not None and not Path(config.data_dir).is_dir():
            raise FileNotFoundError(f"--data-dir {config.data_dir} is not a directory of MNIST IDX files")
        check_split_sizes(config)
        data = DistortedMNISTDataModule(config)
    out.mkdir(parents=True, exist_ok=True)  # only once the run is known to start (no partial output on refusal)
    pl.seed_everything(config.seed, workers=True, verbose=False)
    model = build_model(config, info)
    budget = None
    if config.max_time is not None:

        def timing():
            data.setup("fit")
            n_train, n_val = len(data.train_set), len(data.val_set) if data.val_set is not None else 0
            if info is None:
                x, y = dataset_batch(config)
                return model, x, y, n_train, n_val, draw_seconds(config.dataset, n_train)
            x, y = default_collate([data.train_set[i % n_train] for i in range(config.batch_size)])
            return model, x, y, n_train, n_val

        budget = _budget_plan(config, out, ckpt_path, timing)
        config = config.replace(epochs=plan_length(budget))
    module = STNModule(model, config, data_info=info)
    try:
        run = _fit(
            module, data, config, out, ckpt_path, quiet, budget, has_val=data.val_set is not None or info is None
        )
    except KeyboardInterrupt:  # a Ctrl-C that Lightning did not see (as it finished): the checkpoints are whole
        raise TrainingInterrupted(interrupted_message(out, None, out / "checkpoints" / "last.ckpt")) from None
    if run is None:
        return {}
    trainer, best_path, results = run
    try:
        return _finish(config, out, info, data, budget, best_path, results)
    except KeyboardInterrupt:  # Ctrl-C after the fit, while evaluating: the checkpoints are whole
        last = out / "checkpoints" / "last.ckpt"
        raise TrainingInterrupted(
            interrupted_message(out, (results["epochs"], results["global_step"]), last, after_fit=True)
        ) from None


def _finish(config: TrainConfig, out: Path, info, data, budget, best_path, results: dict) -> dict:
    """After the fit of :func:`train`: the best weights, their test error, the pictures, ``results.json``."""
    model, _, _ = load_run(best_path)
    config = run_config(config, budget)
    save_model(out / "model.safetensors", model, config, info)
    if info is None and dataset_info(config.dataset).task == "registration":
        return _finish_registration(config, out, model, data, results)
    data.setup("test")  # the test set: the config's test_size digits (evaluate.load_test_set)
    test_set = data.test_set
    name = config.data if info is not None else config.dataset
    if info is None and dataset_info(config.dataset).task == "homography":  # its error, no classes to picture
        result = evaluate_homography(model, test_set, batch_size=config.batch_size)
        results = {
            "test_error": result["error"],
            "error_unit": dataset_info(config.dataset).error_unit,
            **results,
            "num_parameters": count_parameters(model),
            "test_size": result["n"],
            "train_size": len(data.train_set),
            "val_size": len(data.val_set),
            "data_source": f"dataset {config.dataset!r}",
            "config": config.to_dict(),
        }
        _write_json(out / "results.json", _ordered(results))
        return results
    if info is not None:
        results["classes"] = info["classes"]
        shown = test_set if len(test_set) else data.val_set if data.val_set is not None else data.train_set
        images_, labels_ = _first(shown, 8)
        if len(test_set):
            result = evaluate_dataset(model, test_set, num_classes=len(info["classes"]), batch_size=config.batch_size)
        else:  # a folder too small to carve test images from (or with no test/ of its own)
            n = len(info["classes"])
            result = {"n": 0, "error": None, "per_class_error": {}, "confusion": [[0] * n for _ in range(n)]}
    else:
        images_, labels_ = test_set.images, test_set.labels
        result = evaluate(model, images_, labels_, num_classes=dataset_info(config.dataset).num_classes)
    if result["n"]:
        title = f"{_row(config)} on {name}"
        confusion_png(result["confusion"], out / "confusion.png", title, classes=_classes(info))
    title = _title(config, name, result["error"]) if result["n"] else f"{_row(config)} on {name} (no test images)"
    show_figure(model, images_, labels_, out / "show.png", title, classes=_classes(info))
    results = {
        "test_error": result["error"],
        **results,
        **({"sequence_error": result["sequence_error"]} if "sequence_error" in result else {}),
        "per_class_error": result["per_class_error"],
        "confusion": result["confusion"],
        "num_parameters": count_parameters(model),
        "test_size": result["n"],
        "train_size": len(data.train_set),
        "val_size": len(data.val_set) if data.val_set is not None else 0,
        "data_source": config.data or config.data_dir or "bundled mnist8k",
        "config": config.to_dict(),
    }
    if budget is not None:
        results["budget"] = {**budget, "epochs_run": results["epochs"], "steps_run": results["global_step"]}
    if isinstance(model, STClassifier) and isinstance(test_set, DistortedMNIST):  # ground-truth poses
        results["pose_spread"] = pose_spread(model, images_[:500], test_set.params[:500], test_set.transform)
    if isinstance(model, STClassifier) and isinstance(test_set, AdditionMNIST):  # which digit each follows
        results["pose_spread_channels"] = channel_pose_spread(model, test_set)
    _write_json(out / "results.json", _ordered(results))
    return results


def _finish_registration(config: TrainConfig, out: Path, model, data, results: dict) -> dict:
    """:func:`_finish` of a registration run: Dice before and after, folding, end-point error and
    seconds per pair on the test pairs (:func:`~.evaluate.evaluate_registration`), a figure of one pair."""
    data.setup("test")
    test_set = data.test_set
    num_classes = dataset_info(config.dataset).num_classes
    result = evaluate_registration(model, test_set, num_classes, batch_size=config.batch_size)
    model_registration_figure(model, test_set, 0, out / "show.png", f"{config.model} on {config.dataset}: test pair 0")
    results = {
        "test": result,
        **results,
        "num_parameters": count_parameters(model),
        "test_size": result["n"],
        "train_size": len(data.train_set),
        "val_size": len(data.val_set) if data.val_set is not None else 0,
        "data_source": f"synthetic {config.dataset} pairs (stnkit.data.shapes)",
        "config": config.to_dict(),
    }
    _write_json(out / "results.json", _ordered(results))
    return results


# the order of results.json's keys (as it always was)
_RESULT_KEYS = (
    "test_error",
    "test",
    "best_val_error",
    "best_val_loss",
    "sequence_error",
    "per_class_error",
    "confusion",
    "epochs",
    "global_step",
    "fit_seconds",
    "num_parameters",
    "best_checkpoint",
    "test_size",
    "train_size",
    "val_size",
    "data_source",
    "git_commit",
    "torch",
    "num_threads",
    "device",
    "config",
)


def _ordered(results: dict) -> dict:
    return {**{k: results[k] for k in _RESULT_KEYS if k in results}, **results}


def _first(dataset, n: int):
    """The first ``n`` samples of a dataset as ``(images, labels)`` tensors."""
    return default_collate([dataset[i] for i in range(min(n, len(dataset)))])


def _classes(info: dict | None):
    return None if info is None else info["classes"]


def _fit(
    module: STNModule,
    data,
    config: TrainConfig,
    out: Path,
    ckpt_path,
    quiet: bool,
    budget,
    has_val: bool,
    own_model=False,
):
    """Lightning's fit of ``module``; ``(trainer, best checkpoint, results so far)``, ``None`` off rank zero."""
    ckpt_dir = out / "checkpoints"
    out.mkdir(parents=True, exist_ok=True)
    if is_rank_zero():
        atomic_write_text(out / "config.yaml", config_yaml(config, own_model))
    callbacks = []
    best_cb = None
    monitor = f"val_{module.objective.monitor}"  # the metric that selects the best epoch (lower is better)
    if has_val:
        # no version counter: an epoch trained again after a kill writes its checkpoint under the same name
        best_cb = ModelCheckpoint(
            dirpath=ckpt_dir, filename="best-{epoch:03d}", monitor=monitor, mode="min", enable_version_counter=False
        )
        callbacks.append(best_cb)
    # last.ckpt at every epoch's end: the best callback's save_last writes it only when the best
    # improves (Lightning 2.6), so a kill would restart from the best epoch, not the last
    last_cb = ModelCheckpoint(
        dirpath=ckpt_dir, filename="last", monitor=None, save_top_k=1, enable_version_counter=False
    )
    clock = WallClock()
    interrupt = NoteInterrupt()
    callbacks += [last_cb, clock, interrupt, Diagnostics(quiet=quiet)]
    # a progress bar on a terminal; one line per epoch in a log file; nothing with quiet (or TQDM_DISABLE=1)
    bar = not quiet and sys.stderr.isatty() and os.environ.get("TQDM_DISABLE", "") in ("", "0")
    if not quiet and not bar:
        callbacks.append(EpochLines())
    if config.deterministic:
        callbacks.append(PinThreads())
    if budget is not None:
        callbacks.append(Replan(budget, lambda plan: is_rank_zero() and _write_json(out / "budget.json", plan)))
    if config.patience is not None and has_val:
        callbacks.append(EarlyStopping(monitor=monitor, mode="min", patience=config.patience))
    # one version directory per (re)start, so a resumed run keeps the earlier logs
    loggers = [CSVLogger(out, name="logs")]
    try:
        import tensorboard  # noqa: F401  (optional: TensorBoard logs and images when it is installed)
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(out, name="tb"))
        callbacks.append(TransformerImages())
    except ImportError:
        pass
    with quiet_lightning():  # its accelerator lines and tips are printed here
        trainer = _trainer(config, callbacks, loggers, bar, has_val, out)
    try:
        with quiet_lightning():
            trainer.fit(module, datamodule=data, ckpt_path=ckpt_path, weights_only=True)
    except BaseException:
        if interrupt.where is None:
            raise
        # Lightning answers Ctrl-C by ignoring SIGINT and exiting (and a Ctrl-C during its teardown may
        # end in a logger's own error, "Writer is closed"): say how to resume instead
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.default_int_handler)
        # last.ckpt, written atomically at every epoch's end, is where a resume restarts exactly
        last = ckpt_dir / "last.ckpt"
        raise TrainingInterrupted(interrupted_message(out, interrupt.where, last if last.is_file() else None)) from None
    if trainer.world_size > 1:
        # every rank records its final weights: they must agree under DDP
        (out / "ddp").mkdir(exist_ok=True)
        _write_json(out / "ddp" / f"rank{trainer.global_rank}.json", {"digest": param_digest(module.model)})
    if not trainer.is_global_zero:
        return None
    best_path = (best_cb.best_model_path if best_cb is not None else "") or str(ckpt_dir / "last.ckpt")
    results = {
        f"best_{monitor}": _float(best_cb.best_model_score) if best_cb is not None else None,
        "epochs": int(trainer.current_epoch),
        "global_step": int(trainer.global_step),
        "fit_seconds": round(clock.elapsed, 1),
        "best_checkpoint": os.path.relpath(best_path, out),
        "git_commit": git_commit(),
        "torch": torch.__version__,
        "num_threads": torch.get_num_threads(),
        # where the fit ran ("cpu", "cuda:0", ...): fit times compare only on the same device
        "device": str(trainer.strategy.root_device),
    }
    return trainer, best_path, results


def _trainer(config: TrainConfig, callbacks, loggers, bar: bool, has_val: bool, out: Path):
    return pl.Trainer(
        max_epochs=config.epochs,
        max_time=None if config.max_time is None else {"seconds": round(config.max_time * 60.0)},
        accelerator=config.accelerator,
        devices=_devices(config.devices),
        num_nodes=config.num_nodes,
        strategy=config.strategy,
        callbacks=callbacks,
        logger=loggers,
        plugins=[AtomicCheckpointIO()],
        # "warn": grid_sample's CUDA backward has no deterministic kernel
        deterministic="warn" if config.deterministic else None,
        gradient_clip_val=config.grad_clip,
        reload_dataloaders_every_n_epochs=1,
        enable_progress_bar=bar,
        enable_model_summary=False,
        log_every_n_steps=10,
        limit_train_batches=config.limit_train_batches,
        limit_val_batches=config.limit_val_batches if has_val else 0,
        num_sanity_val_steps=None if has_val else 0,
        default_root_dir=out,
    )


@contextlib.contextmanager
def quiet_lightning():
    """Lightning without its chatter: its accelerator and tip lines (INFO logs), and the third-party
    deprecation warnings and "possible user warnings" it passes on; stnkit's own warnings still show."""
    from lightning.fabric.utilities.warnings import PossibleUserWarning

    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=PossibleUserWarning)
            warnings.filterwarnings("ignore", message=".*LeafSpec.*")
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", message=r".*Checkpoint directory .* exists and is not empty.*")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def config_yaml(config: TrainConfig, own_model: bool = False) -> str:
    """The options of a run as ``--config`` reads them back (``stnkit train --config OUT/config.yaml``)."""
    import yaml

    data = {k: list(v) if isinstance(v, tuple) else v for k, v in config.to_dict().items()}
    head = (
        "# the options of a stnkit.train.fit run of a model of your own (its model and data options are not read)\n"
        if own_model
        else "# stnkit train --config this-file reproduces the run\n"
    )
    return head + yaml.safe_dump(data, sort_keys=False)


def _budget_plan(config: TrainConfig, out: Path, ckpt_path, timing) -> dict:
    """The epochs that fit in ``--max-time``: planned once (``timing()`` gives the model, a batch and
    the split sizes to time), kept in ``out/budget.json`` for resumes."""
    path = out / "budget.json"
    if ckpt_path is not None and path.is_file():
        return json.loads(path.read_text())
    plan = plan_epochs(config, *timing())
    if is_rank_zero():
        out.mkdir(parents=True, exist_ok=True)
        _write_json(path, plan)
    print(
        f"budget {config.max_time:g} min: {plan['step_seconds'] * 1e3:.0f} ms per step, "
        f"{plan['estimated_epoch_seconds']:.0f} s per epoch -> {plan['planned_epochs']} epochs"
    )
    return plan


def _float(x) -> float | None:
    return None if x is None else round(float(x), 3)


def _row(config: TrainConfig) -> str:
    return row_key(config.model, config.transform)


def _title(config: TrainConfig, data: str, error: float) -> str:
    return f"{_row(config)} on {data}: test error {error:.2f}%"
