"""Lightning callbacks of every run: the ``--max-time`` re-plan and the wall clock."""

from __future__ import annotations

import time

import lightning.pytorch as pl
import torch

from .budget import replan_epochs


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
