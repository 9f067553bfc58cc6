"""Lightning callbacks of every run: the ``--max-time`` re-plan, the wall clock, what the transformers do."""

from __future__ import annotations

import time

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import default_collate

from ..models import STClassifier, transformer_families
from ..nn import collapse_warning, sampling_stats
from ..viz import transformer_outputs_grid
from .budget import replan_epochs
from .evaluate import pose_spread


class Replan(pl.Callback):
    """``--max-time``: after the first epoch, the epochs that fit in the budget at that epoch's
    measured time (:func:`~stnkit.train.budget.replan_epochs`); the trainer's epochs, the
    cosine schedule's length and the config the checkpoints carry all follow.

    ``plan`` is the run's ``budget.json`` record, updated in place (``write(plan)`` saves it);
    a resumed run whose plan was already revised keeps it (and its schedule's length)."""

    def __init__(self, plan: dict, write):
        self.plan = plan
        self.write = write
        self._first_start: float | None = None

    @staticmethod
    def _set_epochs(trainer, pl_module, epochs: int) -> None:
        trainer.fit_loop.max_epochs = epochs
        for cfg in trainer.lr_scheduler_configs:
            if isinstance(cfg.scheduler, torch.optim.lr_scheduler.CosineAnnealingLR):
                cfg.scheduler.T_max = max(1, epochs)
        pl_module.config = pl_module.config.replace(epochs=epochs)
        pl_module.hparams["config"] = {**pl_module.hparams["config"], "epochs": epochs}

    def on_train_start(self, trainer, pl_module):
        if "replanned_epochs" in self.plan:  # a resume: the schedule restored from the checkpoint may predate it
            self._set_epochs(trainer, pl_module, self.plan["replanned_epochs"])

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 0:
            self._first_start = time.perf_counter()
        elif trainer.current_epoch == 1 and self._first_start is not None and "replanned_epochs" not in self.plan:
            # every rank takes rank 0's measurement: under DDP they must stop at the same epoch
            first = trainer.strategy.broadcast(time.perf_counter() - self._first_start, src=0)
            epochs = replan_epochs(self.plan["max_time_minutes"], first)
            self.plan.update(first_epoch_seconds=round(first, 2), replanned_epochs=epochs)
            self._set_epochs(trainer, pl_module, epochs)
            self.write(self.plan)


class WallClock(pl.Callback):
    """Training wall time, carried in checkpoints so that it adds up across resumes."""

    def __init__(self):
        self.before = 0.0  # seconds of earlier segments, restored from the checkpoint
        self.start: float | None = None

    @property
    def elapsed(self) -> float:
        return self.before + (time.time() - self.start if self.start is not None else 0.0)

    def on_fit_start(self, trainer, pl_module):
        self.start = time.time()

    def on_fit_end(self, trainer, pl_module):
        self.before, self.start = self.elapsed, None

    def state_dict(self):
        return {"elapsed": self.elapsed}

    def load_state_dict(self, state_dict):
        self.before = float(state_dict["elapsed"])


def _probe_batch(trainer, n: int = 64):
    """The first ``n`` samples of the validation set (the training set without one), as a batch."""
    dm = trainer.datamodule
    ds = getattr(dm, "val_set", None)
    if ds is None or len(ds) == 0:
        ds = getattr(dm, "train_set", None)
    if ds is None or len(ds) == 0:
        return None, None
    x, _ = default_collate([ds[i] for i in range(min(n, len(ds)))])
    return ds, x


class Diagnostics(pl.Callback):
    """What the transformers do, every epoch, on the first 64 validation samples: the fraction of
    sampling points outside the input (``st_outside_fraction``), the warp's mean area scale
    (``st_mean_scale``, > 1 zooms out), the distance from the identity (``st_identity_distance``)
    and, where the data know each sample's distortion, the pose spread in pixels
    (``st_pose_spread_px``); logged with the metrics. When the transformer collapses, zooms out
    past the image or never leaves the identity, one line says so and what to try
    (:func:`~stnkit.nn.collapse_warning`), once per kind of failure.

    Models that are not an :class:`~stnkit.nn.STClassifier` are left alone."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.history: list[dict] = []
        self.warned: set[str] = set()

    @torch.no_grad()
    def on_validation_epoch_end(self, trainer, pl_module):
        model = pl_module.model
        if trainer.sanity_checking or not isinstance(model, STClassifier):
            return
        ds, x = _probe_batch(trainer)
        if x is None:
            return
        was_training = model.training
        model.eval()
        try:
            x = x.to(pl_module.device)
            out, params = model.warp_input(x)
            stats = [
                sampling_stats(family, p.float(), tuple(out.shape[-2:]))
                for family, p in zip(transformer_families(model), params, strict=True)
            ]
            spread = None
            if getattr(ds, "params", None) is not None and getattr(ds, "transform", None) and ds.params.ndim == 2:
                images = getattr(ds, "images", None)
                if images is not None and images.shape[-2:] == x.shape[-2:]:
                    spread = pose_spread(model, x.cpu(), ds.params[: x.shape[0]], ds.transform)["spread_st_px"]
        finally:
            model.train(was_training)
        worst = max(stats, key=lambda s: (s["nonfinite"], s["outside_fraction"]))
        pl_module.log_dict(
            {f"st_{k}": float(worst[k]) for k in ("outside_fraction", "mean_scale", "identity_distance")},
            on_epoch=True,
        )
        if spread is not None:
            pl_module.log("st_pose_spread_px", float(spread), on_epoch=True)
        self.history.append(worst)
        warning = collapse_warning(self.history)
        if warning is not None and trainer.is_global_zero:
            kind = warning.split(":")[0]
            if kind not in self.warned:
                self.warned.add(kind)
                rank_zero_warn(f"epoch {trainer.current_epoch}: {warning}")


class TransformerImages(pl.Callback):
    """The transformers' outputs as a TensorBoard image (``transformer``) at the end of every
    validation epoch: the first 8 validation inputs, and below them what each transformer makes
    of them (:func:`~stnkit.viz.transformer_outputs_grid`)."""

    def on_validation_epoch_end(self, trainer, pl_module):
        if trainer.sanity_checking or not trainer.is_global_zero or not isinstance(pl_module.model, STClassifier):
            return
        writers = [lg.experiment for lg in trainer.loggers if hasattr(lg.experiment, "add_image")]
        if not writers:
            return
        _, x = _probe_batch(trainer, 8)
        if x is None or x.shape[1] not in (1, 3):  # a picture of grey or RGB inputs only
            return
        grid = transformer_outputs_grid(pl_module.model, x.to(pl_module.device), n=8)
        for writer in writers:
            writer.add_image("transformer", grid, trainer.current_epoch)


class EpochLines(pl.Callback):
    """One line per epoch (``epoch 3/20: train loss 0.41, error 12.5 %; val error 9.8 %; 14.2 s``): what
    a log file gets instead of a progress bar that redraws twice a step."""

    def __init__(self):
        self._start: float | None = None

    def on_train_epoch_start(self, trainer, pl_module):
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        if not trainer.is_global_zero:
            return
        m = trainer.callback_metrics
        parts = []
        unit = getattr(pl_module, "error_unit", "%")
        if "train_loss" in m:
            error = f", error {float(m['train_error']):.2f} {unit}" if "train_error" in m else ""
            parts.append(f"train loss {float(m['train_loss']):.4f}{error}")
        if "val_error" in m:
            parts.append(f"val error {float(m['val_error']):.2f} {unit}")
        elif "val_dice" in m:  # a registration network
            parts.append(f"val loss {float(m['val_loss']):.4f}, Dice {float(m['val_dice']):.3f}")
        if self._start is not None:
            parts.append(f"{time.perf_counter() - self._start:.1f} s")
        print(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}: " + "; ".join(parts), flush=True)
