"""What a model is trained to minimise, and what is logged of it: one :class:`Objective` per task.

The Lightning module (:class:`~stnkit.train.module.STNModule`) asks its objective for the loss of a batch
and the metrics to log; the run (:mod:`stnkit.train.run`) asks it which validation metric picks the best
checkpoint. A model's task comes from the registry (:class:`~stnkit.models.ModelSpec` ``task``):

* ``classification`` (:class:`Classification`): cross-entropy, the error (%) that selects checkpoints,
  and the transformer's consistency and coverage terms when asked for;
* ``registration`` (:class:`PairwiseRegistration`): unsupervised, on (moving, fixed) pairs:
  ``similarity(warped, fixed) + smoothness_weight * smoothness(field in voxels)`` and, when
  ``dice_weight > 0``, ``dice_weight * dice_loss`` of the warped moving labels against the fixed ones
  (labels as an auxiliary loss); the total loss selects checkpoints (no label is needed to train or to
  select), and validation and test log the Dice before and after, folding (%) and end-point error;
* ``homography`` (:class:`Homography`): the four corner offsets of a (P_A, P_B) patch pair, by the
  supervised corner loss or the unsupervised photometric loss through the projective warp (the model's
  ``ModelSpec.loss``); both log and select by the mean corner error (px).
"""

from __future__ import annotations

import functools

import torch.nn.functional as F
from torch import Tensor

from ..data import dataset_info
from ..geometry import field_to_pixels, warp_field
from ..models import STClassifier, model_spec, transformer_families
from ..nn.similarity import dice_loss, similarity_loss, smoothness_loss
from .config import TrainConfig
from .evaluate import registration_metrics
from .losses import classification_loss, consistency_loss, corner_loss, photometric_loss


class Objective:
    """A task's loss and metrics.

    ``objective(module, batch, stage)`` returns ``(loss, logs)``: the loss to minimise and the metrics
    to log, by name (logged as ``{stage}_{name}``, epoch means; ``None`` values are not logged).
    ``monitor`` names the metric (of ``logs``, lower is better) whose validation value selects the best
    checkpoint: ``val_{monitor}``.
    """

    monitor = "loss"

    def __init__(self, config: TrainConfig):
        self.config = config

    def __call__(self, module, batch, stage: str) -> tuple[Tensor, dict[str, Tensor | None]]:
        raise NotImplementedError


class Classification(Objective):
    """Cross-entropy of a classifier (with or without spatial transformers); selects by error (%)."""

    monitor = "error"

    def __call__(self, module, batch, stage):
        cfg = self.config
        x, y = batch
        model = module.model
        consistency = coverage = None
        if isinstance(model, STClassifier):
            out, params = model.warp_input(x)
            logits = model.classifier(out)
            if stage == "train" and cfg.coverage_weight > 0:
                coverage = module.coverage(params, tuple(out.shape[-2:]))
            if stage == "train" and cfg.consistency_weight > 0:
                family = transformer_families(model)[0]
                q = family.random(x.shape[0], cfg.consistency_strength, device=x.device, dtype=x.dtype)
                consistency = consistency_loss(model, x, q, out=out)
        else:
            logits = model(x)
        loss, error, sequence_error = classification_loss(logits, y)
        total = loss if consistency is None else loss + cfg.consistency_weight * consistency
        if coverage is not None:
            total = total + cfg.coverage_weight * coverage
        logs = {"error": error, "sequence_error": sequence_error, "loss": loss}
        logs.update(consistency=consistency, coverage=coverage)
        return total, logs


class PairwiseRegistration(Objective):
    """Unsupervised registration of (moving, fixed) pairs (module docstring); selects by the total loss.

    The batch is ``(x, y)``: ``x`` ``(B, 2, *spatial)`` (moving, fixed), ``y`` a dict with
    ``moving_labels``, ``fixed_labels`` (``(B, *spatial)``) and, for the end-point error, ``field``.
    The model is a :class:`~stnkit.models.FieldRegistration` (its ``split`` and ``register``).
    """

    monitor = "loss"

    def __init__(self, config: TrainConfig, num_classes: int):
        super().__init__(config)
        self.num_classes = num_classes

    def __call__(self, module, batch, stage):
        cfg = self.config
        x, y = batch
        model = module.model
        moving, fixed = model.split(x)
        reg = model.register(moving, fixed)
        similarity = similarity_loss(cfg.similarity, reg.warped, fixed)
        smoothness = smoothness_loss(field_to_pixels(reg.field))
        total = similarity + cfg.smoothness_weight * smoothness
        logs: dict[str, Tensor | None] = {"loss": None, "similarity": similarity, "smoothness": smoothness}
        if cfg.dice_weight > 0:
            onehot = F.one_hot(y["moving_labels"].long(), self.num_classes).movedim(-1, 1).to(x.dtype)
            target = F.one_hot(y["fixed_labels"].long(), self.num_classes).movedim(-1, 1).to(x.dtype)
            dice = dice_loss(warp_field(onehot, reg.displacement), target)
            total = total + cfg.dice_weight * dice
            logs["dice_loss"] = dice
        logs["loss"] = total
        if stage != "train":
            metrics = registration_metrics(
                reg.displacement, y["moving_labels"], y["fixed_labels"], self.num_classes, y.get("field")
            )
            logs.update({k: v.mean() for k, v in metrics.items()})
        return total, logs


class Homography(Objective):
    """A homography network's loss: ``corners`` (half the mean squared error of the corner offsets, px^2,
    DeTone et al. 2016) or ``photometric`` (the warped P_A against P_B, no corner labels; Nguyen et al.
    2018); logs and selects by the mean corner error (px)."""

    monitor = "error"
    LOSSES = {"corners": corner_loss, "photometric": photometric_loss}

    def __init__(self, config: TrainConfig, loss: str | None):
        super().__init__(config)
        self.loss = self.LOSSES[loss or "corners"]
        if self.loss is photometric_loss and (config.photometric_levels > 1 or config.photometric_standardize):
            self.loss = functools.partial(
                photometric_loss, levels=config.photometric_levels, standardize=config.photometric_standardize
            )

    def __call__(self, module, batch, stage):
        x, y = batch
        loss, error, _ = self.loss(module.model(x), x, y)
        return loss, {"error": error, "loss": loss}


def objective_for(config: TrainConfig) -> Objective:
    """The objective of ``config``'s model, by its task in the registry (a registration objective counts
    the labels of ``config.dataset``'s maps; a homography objective takes the model's loss)."""
    spec = model_spec(config.model)
    if spec.task == "registration":
        return PairwiseRegistration(config, dataset_info(config.dataset).num_classes)
    if spec.task == "homography":
        return Homography(config, spec.loss)
    return Classification(config)


__all__ = ["Classification", "Homography", "Objective", "PairwiseRegistration", "objective_for"]
