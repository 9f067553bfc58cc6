"""Equal-budget training: how many epochs of a recipe fit in a number of minutes on this machine.

``stnkit train --max-time M`` times a few training steps and a validation pass
of the very model and batch size it is about to train, sets the number of
epochs so that the whole run (with its learning-rate schedule) ends within
about 90 % of ``M`` minutes, and keeps Lightning's own ``max_time`` as a hard
stop. After the first epoch it plans again from that epoch's measured time
(timed steps at the start vary with the machine's load by up to 2x) and
stretches or shortens the cosine schedule to the new length. The plan (step
time, epochs, the re-plan) goes into ``budget.json`` and ``results.json``.
"""

from __future__ import annotations

import copy
import math
import statistics
import time

import torch
from torch import Tensor, nn

from ..data import dataset_info, open_dataset
from .config import TrainConfig
from .losses import classification_loss

# the share of the budget the plan fills; the rest absorbs the noise of the estimate
BUDGET_FILL = 0.9


def _median_seconds(fn, repeat: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def plan_epochs(
    config: TrainConfig,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    n_train: int,
    n_val: int,
    draw_seconds: float = 0.0,
    repeat: int = 7,
) -> dict:
    """Epochs of ``config`` that fit in ``config.max_time`` minutes, from timed steps of (a copy of)
    ``model`` on one batch ``x``, ``y`` and ``draw_seconds``, the time one epoch spends drawing
    its training data afresh (:func:`draw_seconds`)."""
    if config.max_time is None:
        raise ValueError("plan_epochs needs config.max_time (minutes)")
    bs = config.batch_size
    model = copy.deepcopy(model)  # the timed steps leave the model to train untouched
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # the update's cost, not its effect

    def step():
        opt.zero_grad(set_to_none=True)
        classification_loss(model(x), y)[0].backward()
        opt.step()

    def evaluate():
        with torch.no_grad():
            model(x)

    model.train()
    step_s = _median_seconds(step, repeat, warmup=3)
    model.eval()
    val_s = _median_seconds(evaluate, repeat)
    steps = math.ceil(n_train / bs)
    if isinstance(config.limit_train_batches, int):
        steps = min(steps, config.limit_train_batches)
    elif isinstance(config.limit_train_batches, float):
        steps = max(1, int(steps * config.limit_train_batches))
    val_batches = math.ceil(n_val / bs)
    epoch_s = steps * step_s + val_batches * val_s + draw_seconds
    budget_s = config.max_time * 60.0
    epochs = max(1, int(BUDGET_FILL * budget_s / epoch_s))
    return {
        "max_time_minutes": config.max_time,
        "step_seconds": round(step_s, 4),
        "val_batch_seconds": round(val_s, 4),
        "draw_seconds_per_epoch": round(draw_seconds, 3),
        "steps_per_epoch": steps,
        "estimated_epoch_seconds": round(epoch_s, 2),
        "planned_epochs": epochs,
        "planned_steps": epochs * steps,
    }


def dataset_batch(config: TrainConfig) -> tuple[Tensor, Tensor]:
    """A random batch of the size and shape of a named dataset's (``config.dataset``), to time steps on."""
    info = dataset_info(config.dataset)
    size, bs = info.canvas_size, config.batch_size
    g = torch.Generator().manual_seed(0)
    x = torch.rand(bs, info.in_channels, size, size, generator=g)
    y = torch.randint(0, info.num_classes, (bs, info.num_labels) if info.num_labels > 1 else (bs,), generator=g)
    return x, y


def draw_seconds(dataset: str, n_train: int) -> float:
    """The time one epoch of a named dataset spends distorting its ``n_train`` training digits afresh."""
    g = torch.Generator().manual_seed(1)
    digits = torch.rand(min(n_train, 1024), 1, 28, 28, generator=g)
    ds = open_dataset(dataset, digits, torch.randint(0, 10, (len(digits),), generator=g), seed=0, fresh=True)
    epochs = iter(range(1, 10**6))
    return _median_seconds(lambda: ds.set_epoch(next(epochs)), 2, 1) * n_train / len(digits)


def plan_length(plan: dict) -> int:
    """The epochs a run with this ``budget.json`` record trains: the re-plan's once made, else the first plan's."""
    return plan.get("replanned_epochs", plan["planned_epochs"])


def replan_epochs(max_time_minutes: float, first_epoch_seconds: float) -> int:
    """Epochs that fit in the budget at the measured time of the first whole epoch (training,
    validation and the epoch's distortions), at least 2 (the first is done): the re-plan
    after the first epoch, which corrects the timed steps' estimate."""
    return max(2, int(BUDGET_FILL * max_time_minutes * 60.0 / max(first_epoch_seconds, 1e-6)))
