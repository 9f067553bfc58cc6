"""Lightning modules: the classifier being trained, the distorted-MNIST data, and the wall clock."""

from __future__ import annotations

import time

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Sampler

from ..data import load_digits, open_dataset
from ..geometry import warp
from ..models import STClassifier, transformer_families
from .checkpoint import build_model
from .config import TrainConfig
from .evaluate import load_test_set
from .safety import NonFiniteError, nonfinite_names

# fixed seeds of the held-out draws: validation never shares the test's distortions
_VAL_SEED_OFFSET = 1_000
# The seed of the permutation that picks which training digits become validation digits
# (split_train_val): the first ``val_size`` of the permutation. Not the same idea as
# stnkit.data.mnist.SPLIT_SEED (which bundled digits are test digits), though the same number;
# any change here changes every run's training and validation digits.
VAL_SPLIT_SEED = 20_150_605
# the streams of one training epoch, each a function of (seed, epoch) only (epoch_seed)
_EPOCH_STREAMS = {"shuffle": 1, "steps": 2}


def epoch_seed(seed: int, epoch: int, stream: str) -> int:
    """The seed of one training epoch's ``stream``: ``"shuffle"`` (the order of the
    training digits) or ``"steps"`` (the global torch RNG the steps draw from: dropout,
    the consistency loss's distortions).

    A function of ``(seed, epoch)`` only, like the epoch's distortions
    (:func:`~stnkit.data.stream_seed`): a run resumed from the checkpoint at the end of
    epoch ``e - 1`` trains epoch ``e`` with the very numbers of an uninterrupted run.
    """
    state = np.random.SeedSequence([seed, epoch, _EPOCH_STREAMS[stream]]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])  # < 2**63


def consistency_loss(model: STClassifier, x: Tensor, distortion: Tensor, out: Tensor | None = None) -> Tensor:
    """Transformation-consistency loss: the transformer's outputs for ``x`` and for
    ``x`` warped by ``distortion`` (parameters of the first transformer's family)
    should agree, since both show the same digit in its canonical pose.

    Returns the mean squared difference of the two outputs: zero when
    ``distortion`` is the identity, positive otherwise (for a transformer that
    has not learned to undo the distortion).
    """
    family = transformer_families(model)[0]
    if out is None:
        out, _ = model.warp_input(x)
    x_distorted = warp(x, distortion, family)
    out_distorted, _ = model.warp_input(x_distorted)
    return F.mse_loss(out_distorted, out)


def classification_loss(logits: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
    """Cross-entropy, error (%) and, for several labels per sample, sequence error (%).

    ``logits`` ``(N, C)`` with ``y`` ``(N,)``; or ``(N, K, C)`` with ``y`` ``(N, K)`` for
    ``K`` labels per sample (a digit sequence): the loss is the mean over the ``N * K``
    labels, the error is per label, the sequence error counts a sample wrong when any of
    its labels is.
    """
    if logits.ndim == 3:
        wrong = logits.argmax(2) != y
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        return loss, wrong.float().mean() * 100.0, wrong.any(1).float().mean() * 100.0
    return F.cross_entropy(logits, y), (logits.argmax(1) != y).float().mean() * 100.0, None


class STNModule(pl.LightningModule):
    """Trains a classifier (with or without spatial transformers) with cross-entropy.

    Logs ``train_loss``, ``train_error``, ``val_loss``, ``val_error`` and
    ``test_error`` (errors in %).
    """

    def __init__(self, config: dict):
        super().__init__()
        self.save_hyperparameters({"config": config})
        self.config = TrainConfig.from_dict(config)
        self.model = build_model(self.config)
        if self.config.compile:
            # in place (nn.Module.compile): parameter names, and so checkpoints, stay as they are
            parts = [self.model.transformer, self.model.classifier] if isinstance(self.model, STClassifier) else []
            for part in parts or [self.model]:
                part.compile()

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def _step(self, batch, stage: str) -> Tensor | None:
        x, y = batch
        consistency = None
        if isinstance(self.model, STClassifier):
            out, _ = self.model.warp_input(x)
            logits = self.model.classifier(out)
            if stage == "train" and self.config.consistency_weight > 0:
                family = transformer_families(self.model)[0]
                q = family.random(x.shape[0], self.config.consistency_strength, device=x.device, dtype=x.dtype)
                consistency = consistency_loss(self.model, x, q, out=out)
        else:
            logits = self.model(x)
        loss, error, sequence_error = classification_loss(logits, y)
        loss_total = loss if consistency is None else loss + self.config.consistency_weight * consistency
        if stage == "train" and not torch.isfinite(loss_total):
            return self._nonfinite(f"the loss is {float(loss_total.detach())}")  # before it reaches the logs
        sync = stage != "train"
        self.log(f"{stage}_error", error, on_step=False, on_epoch=True, prog_bar=stage != "test", sync_dist=sync)
        if sequence_error is not None:
            self.log(f"{stage}_sequence_error", sequence_error, on_step=False, on_epoch=True, sync_dist=sync)
        self.log(f"{stage}_loss", loss, on_step=False, on_epoch=True, sync_dist=sync)
        if consistency is not None:
            self.log("train_consistency", consistency, on_step=False, on_epoch=True)
        return loss_total

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


def check_split_sizes(config: TrainConfig) -> None:
    """Refuse a ``val_size`` or ``train_size`` that the training digits cannot give (before any output)."""
    n = len(load_digits("train", config.data_dir)[1])
    if not 0 <= config.val_size < n:
        raise ValueError(f"val_size must be in [0, {n}) (the training digits), got {config.val_size}")
    left = n - config.val_size
    if config.train_size is not None and config.train_size > left:
        raise ValueError(
            f"train_size must be at most {left} (the training digits left after val_size {config.val_size}), "
            f"got {config.train_size}"
        )


def split_train_val(n: int, val_size: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed partition of ``n`` training digits into (train, validation) indices (:data:`VAL_SPLIT_SEED`)."""
    if not 0 <= val_size < n:
        raise ValueError(f"val_size must be in [0, {n}), got {val_size}")
    perm = np.random.default_rng(VAL_SPLIT_SEED).permutation(n)
    return np.sort(perm[val_size:]), np.sort(perm[:val_size])


class SeededShuffle(Sampler[int]):
    """A random order of ``range(n)`` fixed by ``seed``: every pass over it gives the same order.

    (``RandomSampler`` with a generator draws a new order at each pass, so one extra pass,
    as Lightning makes when it restarts an epoch, would change the order.) The first pass
    is ``RandomSampler``'s with a generator seeded by ``seed``.
    """

    def __init__(self, n: int, seed: int):
        self.n, self.seed = n, seed

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return iter(torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed)).tolist())


class DistortedMNISTDataModule(pl.LightningDataModule):
    """Train (distorted afresh every epoch), validation (carved from the training
    digits, fixed draw) and test (the test digits, fixed by ``test_seed``)."""

    def __init__(self, config: TrainConfig):
        super().__init__()
        self.config = config
        self.train_set = self.val_set = self.test_set = None

    def setup(self, stage: str | None = None) -> None:
        cfg = self.config
        if self.train_set is None:
            images, labels = load_digits("train", cfg.data_dir)
            train_idx, val_idx = split_train_val(len(labels), cfg.val_size)
            if cfg.train_size is not None:
                train_idx = train_idx[: cfg.train_size]
            self.train_set = open_dataset(cfg.dataset, images[train_idx], labels[train_idx], seed=cfg.seed, fresh=True)
            self.val_set = open_dataset(
                cfg.dataset, images[val_idx], labels[val_idx], seed=cfg.test_seed + _VAL_SEED_OFFSET
            )
        if self.test_set is None and stage in (None, "test"):
            self.test_set = load_test_set(cfg, size=cfg.test_size)

    def _loader(self, dataset, shuffle_seed: int | None = None) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.config.batch_size,
            sampler=None if shuffle_seed is None else SeededShuffle(len(dataset), shuffle_seed),
            num_workers=self.config.num_workers,
        )

    def train_dataloader(self) -> DataLoader:
        # called again every epoch (reload_dataloaders_every_n_epochs=1): a new draw of the
        # distortions and a new order, both functions of (seed, epoch)
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        self.train_set.set_epoch(epoch)
        return self._loader(self.train_set, shuffle_seed=epoch_seed(self.config.seed, epoch, "shuffle"))

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set)


class Replan(pl.Callback):
    """``--max-time``: after the first epoch, the epochs that fit in the budget at that epoch's
    measured time (:func:`~stnkit.training.budget.replan_epochs`); the trainer's epochs, the
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
            from .budget import replan_epochs

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
