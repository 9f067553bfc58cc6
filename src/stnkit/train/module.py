"""The Lightning module that trains a classifier (with or without spatial transformers)."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from ..data import dataset_info
from ..models import STClassifier, transformer_families
from ..nn import coverage_penalty
from .config import TrainConfig
from .losses import epoch_seed
from .objectives import objective_for
from .safety import NonFiniteError, nonfinite_names


class STNModule(pl.LightningModule):
    """Trains ``model`` on its task's objective (:mod:`stnkit.train.objectives`): any classifier (with or
    without spatial transformers) with cross-entropy, a registration network on its pairs, or a
    homography network by its corner or photometric loss.

    ``config`` gives the optimisation (and is stored in every checkpoint, with
    ``data_info``, the classes and normalisation of a run on your own images). The
    localisation nets of an :class:`~stnkit.nn.STClassifier` (its ``transformer``) train at
    ``lr * loc_lr_mult``; ``coverage_weight`` adds :func:`~stnkit.nn.coverage_penalty` of
    their sampling grids, ``consistency_weight`` the transformation-consistency loss.

    Logs what the objective gives, per stage: a classifier's ``train_loss``, ``train_error``,
    ``val_loss``, ``val_error`` and ``test_error`` (errors in %); a homography network's loss and mean
    corner error (px, ``error_unit``); a registration network's loss and its parts, and in validation
    and test its Dice, folding and end-point error.
    """

    def __init__(
        self, model: nn.Module, config: TrainConfig | dict, data_info: dict | None = None, own_model: bool = False
    ):
        super().__init__()
        self.config = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
        hparams = {"config": self.config.to_dict()}
        if data_info is not None:
            hparams["data_info"] = data_info
        if own_model:  # a model of the user's (stnkit.train.fit): stnkit cannot rebuild it from the config
            hparams["own_model"] = type(model).__name__
        self.save_hyperparameters(hparams)
        self.model = model
        # the loss and the metrics of the model's task (stnkit.train.objectives)
        self.objective = objective_for(self.config)
        # the unit of the logged error: % of classes, or px of corners for homography
        self.error_unit = (
            "%" if own_model or self.config.data is not None else dataset_info(self.config.dataset).error_unit
        )
        if self.config.compile:
            # in place (nn.Module.compile): parameter names, and so checkpoints, stay as they are
            parts = [self.model.transformer, self.model.classifier] if isinstance(self.model, STClassifier) else []
            for part in parts or [self.model]:
                part.compile()

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def _step(self, batch, stage: str) -> Tensor | None:
        loss_total, logs = self.objective(self, batch, stage)
        if stage == "train" and not torch.isfinite(loss_total):
            return self._nonfinite(f"the loss is {float(loss_total.detach())}")  # before it reaches the logs
        sync = stage != "train"
        monitor = self.objective.monitor
        for name, value in logs.items():
            if value is not None:
                prog = name == monitor and stage != "test"
                self.log(f"{stage}_{name}", value, on_step=False, on_epoch=True, prog_bar=prog, sync_dist=sync)
        return loss_total

    def coverage(self, params: list[Tensor], out_size: tuple[int, int]) -> Tensor:
        """The mean :func:`~stnkit.nn.coverage_penalty` of the transformers' sampling grids."""
        st = self.model.transformer
        modules = getattr(st, "transformers", [st])
        total = 0.0
        for module, family, p in zip(modules, transformer_families(self.model), params, strict=True):
            total = total + coverage_penalty(family.grid(p, out_size, getattr(module, "align_corners", False)))
        return total / len(params)

    def _where(self) -> str:
        return f"global step {self.global_step} (epoch {self.current_epoch})"

    def _nonfinite(self, what: str) -> None:
        """Stop training (``on_nonfinite="stop"``, :class:`NonFiniteError`) or skip this step (``"skip"``)."""
        if self.config.on_nonfinite == "stop":
            raise NonFiniteError(
                f"training stopped at {self._where()}: {what}; no checkpoint holds these weights "
                "(--on-nonfinite skip skips such steps)"
            )
        print(f"skipping {self._where()}: {what}")
        return None

    def on_before_optimizer_step(self, optimizer) -> None:
        grads = {n: p.grad for n, p in self.named_parameters() if p.grad is not None}
        bad = nonfinite_names(grads)
        if bad:
            self._nonfinite(f"non-finite gradients in {', '.join(bad[:3])}")
            for p in self.parameters():  # "skip": parameters without a gradient are left as they are
                p.grad = None

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        bad = nonfinite_names(dict(self.named_parameters()))
        if bad:  # cannot be undone: stop whatever on_nonfinite says
            raise NonFiniteError(
                f"training stopped at {self._where()}: the step made parameters non-finite "
                f"({', '.join(bad[:3])}); no checkpoint holds these weights (try a lower --lr or --grad-clip)"
            )

    def on_train_start(self) -> None:
        # a run resumed with more (or fewer) epochs: the restored cosine schedule still has the old
        # length; give it the new one, at the closed-form learning rate of the epoch it resumes at
        for cfg in self.trainer.lr_scheduler_configs:
            sched = cfg.scheduler
            if isinstance(sched, torch.optim.lr_scheduler.CosineAnnealingLR) and sched.T_max != max(
                1, self.config.epochs
            ):
                sched.T_max = max(1, self.config.epochs)
                e = min(sched.last_epoch, sched.T_max)
                for group in sched.optimizer.param_groups:
                    base = group["initial_lr"]
                    group["lr"] = sched.eta_min + (base - sched.eta_min) * (1 + math.cos(math.pi * e / sched.T_max)) / 2
                sched._last_lr = [group["lr"] for group in sched.optimizer.param_groups]

    def on_train_epoch_start(self) -> None:
        # the steps' random numbers restart from (seed, epoch): a resumed epoch draws what it drew before
        torch.manual_seed(epoch_seed(self.config.seed, self.current_epoch, "steps"))

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def configure_optimizers(self):
        cfg = self.config
        loc_ids = set()
        if isinstance(self.model, STClassifier):
            loc_ids = {id(p) for p in self.model.transformer.parameters()}
        groups: dict[tuple[bool, bool], list] = {}
        for p in self.model.parameters():
            # no weight decay on biases: it would pull the identity-initialised
            # transformer heads towards the zero (collapsed) transform
            groups.setdefault((id(p) in loc_ids, p.ndim > 1), []).append(p)
        param_groups = [
            {
                "params": ps,
                "lr": cfg.lr * (cfg.loc_lr_mult if is_loc else 1.0),
                "weight_decay": cfg.weight_decay if decay else 0.0,
            }
            for (is_loc, decay), ps in groups.items()
        ]
        if cfg.optimizer == "sgd":
            opt = torch.optim.SGD(param_groups, lr=cfg.lr, momentum=cfg.momentum)
        elif cfg.optimizer == "adamw":
            opt = torch.optim.AdamW(param_groups, lr=cfg.lr)
        else:
            raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {cfg.optimizer!r}")
        if cfg.schedule == "none":
            return opt
        if cfg.schedule == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, cfg.epochs))
        elif cfg.schedule == "step":
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, cfg.step_epochs), gamma=0.1)
        else:
            raise ValueError(f"schedule must be 'cosine', 'step' or 'none', got {cfg.schedule!r}")
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
