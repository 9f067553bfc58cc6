"""``train()``: fit a model with Lightning, then evaluate it and write the run directory.

The pieces it relies on live by concern: the resume policy in :mod:`.resume`,
provenance (commit, weight digest) in :mod:`.provenance`, the wall clock in
:mod:`.module`, the tables of finished runs in :mod:`.report`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
from pathlib import Path

import torch

from .._io import atomic_write_text
from ..data import AdditionMNIST, DistortedMNIST, dataset_info
from ..models import STClassifier, count_parameters, row_key
from .budget import plan_epochs, plan_length
from .callbacks import Replan, WallClock
from .checkpoint import checkpoint_config, load_model, save_model
from .config import TrainConfig
from .datamodule import DistortedMNISTDataModule, check_split_sizes
from .evaluate import channel_pose_spread, confusion_png, evaluate, pose_spread
from .module import STNModule
from .provenance import git_commit, param_digest
from .resume import check_resumable, resume_checkpoint
from .safety import AtomicCheckpointIO, NoteInterrupt, PinThreads, TrainingInterrupted, interrupted_message
from .show import show_figure


def _devices(value: str):
    return int(value) if value.isdigit() else value


def _write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def train(
    config: TrainConfig,
    out: str | os.PathLike,
    resume: bool | str = False,
    quiet: bool = False,
    overwrite: bool = False,
) -> dict:
    """Train a model as ``config`` says, evaluate it on the test split, write results to ``out``.

    Writes ``out/checkpoints/{best-*,last}.ckpt``, ``out/model.safetensors`` (the
    best weights by validation error, with the config), ``out/logs/version_*/metrics.csv``
    (one version per start or resume),
    ``out/results.json`` and ``out/show.png``. ``resume=True`` continues from
    ``out/checkpoints/last.ckpt`` (a path resumes from that file). A directory
    that already holds a run is refused unless ``resume`` or ``overwrite``
    (which deletes the earlier run's checkpoints, logs and results first).

    With ``config.deterministic`` on CPU, two runs of the same config with the same
    number of torch threads (``results["num_threads"]``) end with identical weights and
    results, and so does a run killed at any moment and resumed: the distortions, the
    order of the digits and the steps' random numbers are functions of (seed, epoch),
    and a resume restarts the interrupted epoch from the last epoch-end checkpoint.
    """
    threads_before = torch.get_num_threads()
    try:
        return _train(config, out, resume, quiet, overwrite)
    finally:
        torch.set_num_threads(threads_before)  # PinThreads may have changed it


def _train(config: TrainConfig, out, resume, quiet: bool, overwrite: bool) -> dict:
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    out = Path(out)
    ckpt_dir = out / "checkpoints"
    earlier = [
        out / n
        for n in ("checkpoints", "logs", "tb", "ddp", "results.json", "model.safetensors", "budget.json")
        if (out / n).exists()
    ]
    if earlier and not resume:
        if not overwrite:
            raise FileExistsError(
                f"{out} already holds a run: pass --resume to continue it or --overwrite to start again"
            )
        if is_rank_zero():  # under DDP every rank runs this function
            for p in earlier:
                shutil.rmtree(p) if p.is_dir() else p.unlink()
    ckpt_path = resume_checkpoint(out, resume)
    if ckpt_path is not None:
        check_resumable(checkpoint_config(ckpt_path), config, ckpt_path)
    if config.data_dir is not None and not Path(config.data_dir).is_dir():
        raise FileNotFoundError(f"--data-dir {config.data_dir} is not a directory of MNIST IDX files")
    check_split_sizes(config)
    out.mkdir(parents=True, exist_ok=True)  # only once the run is known to start (no partial output on refusal)
    data = DistortedMNISTDataModule(config)
    budget = None
    if config.max_time is not None:
        budget = _budget_plan(config, data, out, resumed=ckpt_path is not None)
        config = config.replace(epochs=plan_length(budget))
    pl.seed_everything(config.seed, workers=True, verbose=False)
    module = STNModule(config.to_dict())
    # no version counter: an epoch trained again after a kill writes its checkpoint under the same name
    best_cb = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="best-{epoch:03d}",
        monitor="val_error",
        mode="min",
        enable_version_counter=False,
    )
    # last.ckpt at every epoch's end: the best callback's save_last writes it only when the best
    # improves (Lightning 2.6), so a kill would restart from the best epoch, not the last
    last_cb = ModelCheckpoint(
        dirpath=ckpt_dir, filename="last", monitor=None, save_top_k=1, enable_version_counter=False
    )
    clock = WallClock()
    interrupt = NoteInterrupt()
    callbacks = [best_cb, last_cb, clock, interrupt]
    if config.deterministic:
        callbacks.append(PinThreads())
    if budget is not None:
        callbacks.append(Replan(budget, lambda plan: is_rank_zero() and _write_json(out / "budget.json", plan)))
    if config.patience is not None:
        callbacks.append(EarlyStopping(monitor="val_error", mode="min", patience=config.patience))
    # one version directory per (re)start, so a resumed run keeps the earlier logs
    loggers = [CSVLogger(out, name="logs")]
    try:
        import tensorboard  # noqa: F401
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(out, name="tb"))
    except ImportError:
        pass
    trainer = pl.Trainer(
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
        enable_progress_bar=not quiet,
        enable_model_summary=not quiet,
        log_every_n_steps=10,
        limit_train_batches=config.limit_train_batches,
        limit_val_batches=config.limit_val_batches,
        default_root_dir=out,
    )
    try:
        trainer.fit(module, datamodule=data, ckpt_path=ckpt_path, weights_only=True)
    except SystemExit:
        if interrupt.where is None:
            raise
        # Lightning answers Ctrl-C by ignoring SIGINT and exiting: say how to resume instead
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.default_int_handler)
        # last.ckpt, written atomically at every epoch's end, is where a resume restarts exactly
        last = ckpt_dir / "last.ckpt"
        raise TrainingInterrupted(interrupted_message(out, interrupt.where, last if last.is_file() else None)) from None
    if trainer.world_size > 1:
        # every rank records its final weights: they must agree under DDP
        (out / "ddp").mkdir(exist_ok=True)
        _write_json(out / "ddp" / f"rank{trainer.global_rank}.json", {"digest": param_digest(module.model)})
    if budget is not None:  # the epochs of the re-plan after the first epoch (Replan)
        config = config.replace(epochs=plan_length(budget))
    if not trainer.is_global_zero:
        return {}
    best_path = best_cb.best_model_path or str(ckpt_dir / "last.ckpt")
    model, _ = load_model(best_path)
    save_model(out / "model.safetensors", model, config)
    data.setup("test")  # the test set: the config's test_size digits (evaluate.load_test_set)
    test_set = data.test_set
    images, labels = test_set.images, test_set.labels
    result = evaluate(model, images, labels, num_classes=dataset_info(config.dataset).num_classes)
    confusion_png(result["confusion"], out / "confusion.png", f"{_row(config)} on {config.dataset}")
    show_figure(model, images, labels, out / "show.png", _title(config, result["error"]))
    results = {
        "test_error": result["error"],
        "best_val_error": _float(best_cb.best_model_score),
        **({"sequence_error": result["sequence_error"]} if "sequence_error" in result else {}),
        "per_class_error": result["per_class_error"],
        "confusion": result["confusion"],
        "epochs": int(trainer.current_epoch),
        "global_step": int(trainer.global_step),
        "fit_seconds": round(clock.elapsed, 1),
        "num_parameters": count_parameters(model),
        "best_checkpoint": os.path.relpath(best_path, out),
        "test_size": result["n"],
        "train_size": len(data.train_set),
        "val_size": len(data.val_set),
        "data_source": config.data_dir or "bundled mnist8k",
        "git_commit": git_commit(),
        "torch": torch.__version__,
        "num_threads": torch.get_num_threads(),
        # where the fit ran ("cpu", "cuda:0", ...): fit times compare only on the same device
        "device": str(trainer.strategy.root_device),
        "config": config.to_dict(),
    }
    if budget is not None:
        results["budget"] = {**budget, "epochs_run": int(trainer.current_epoch), "steps_run": int(trainer.global_step)}
    if isinstance(model, STClassifier) and isinstance(test_set, DistortedMNIST):  # ground-truth poses
        results["pose_spread"] = pose_spread(model, images[:500], test_set.params[:500], test_set.transform)
    if isinstance(model, STClassifier) and isinstance(test_set, AdditionMNIST):  # which digit each follows
        results["pose_spread_channels"] = channel_pose_spread(model, test_set)
    _write_json(out / "results.json", results)
    return results


def _budget_plan(config: TrainConfig, data, out: Path, resumed: bool) -> dict:
    """The epochs that fit in ``--max-time``: planned once, kept in ``out/budget.json`` for resumes."""
    path = out / "budget.json"
    if resumed and path.is_file():
        return json.loads(path.read_text())
    data.setup("fit")
    plan = plan_epochs(config, len(data.train_set), len(data.val_set))
    if is_rank_zero():
        _write_json(path, plan)
    print(
        f"budget {config.max_time:g} min: {plan['step_seconds'] * 1e3:.0f} ms per step, "
        f"{plan['estimated_epoch_seconds']:.0f} s per epoch -> {plan['planned_epochs']} epochs"
    )
    return plan


def is_rank_zero() -> bool:
    from lightning.pytorch.utilities import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def _float(x) -> float | None:
    return None if x is None else round(float(x), 3)


def _row(config: TrainConfig) -> str:
    return row_key(config.model, config.transform)


def _title(config: TrainConfig, error: float) -> str:
    return f"{_row(config)} on {config.dataset}: test error {error:.2f}%"
