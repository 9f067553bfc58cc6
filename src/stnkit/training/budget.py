"""Equal-budget training: how many epochs of a recipe fit in a number of minutes on this machine.

``stnkit train --max-time M`` times a few training steps and a validation pass
of the very model and batch size it is about to train, sets the number of
epochs so that the whole run (with its learning-rate schedule) ends within
about 90 % of ``M`` minutes, and keeps Lightning's own ``max_time`` as a hard
stop. The plan (step time, epochs) goes into ``budget.json`` and ``results.json``.
"""

from __future__ import annotations

import math
import statistics
import time

import torch
import torch.nn.functional as F

from .config import TrainConfig

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


def plan_epochs(config: TrainConfig, n_train: int, n_val: int, repeat: int = 5) -> dict:
    """Epochs of ``config`` that fit in ``config.max_time`` minutes, from timed steps of its model."""
    from ..data import get_generator
    from .module import build_model

    if config.max_time is None:
        raise ValueError("plan_epochs needs config.max_time (minutes)")
    gen = get_generator(config.dataset)
    size = gen.canvas_size
    bs = config.batch_size
    g = torch.Generator().manual_seed(0)
    x = torch.rand(bs, 1, size, size, generator=g)
    y = torch.randint(0, 10, (bs,), generator=g)
    model = build_model(config)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # the update's cost, not its effect

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    def evaluate():
        with torch.no_grad():
            model(x)

    model.train()
    step_s = _median_seconds(step, repeat)
    model.eval()
    val_s = _median_seconds(evaluate, repeat)
    digits = torch.rand(min(n_train, 1024), 1, 28, 28, generator=g)
    draw_s = _median_seconds(lambda: gen(digits, torch.Generator().manual_seed(1)), 2, 1) * n_train / len(digits)
    steps = math.ceil(n_train / bs)
    if isinstance(config.limit_train_batches, int):
        steps = min(steps, config.limit_train_batches)
    elif isinstance(config.limit_train_batches, float):
        steps = max(1, int(steps * config.limit_train_batches))
    val_batches = math.ceil(n_val / bs)
    epoch_s = steps * step_s + val_batches * val_s + draw_s
    budget_s = config.max_time * 60.0
    epochs = max(1, int(BUDGET_FILL * budget_s / epoch_s))
    return {
        "max_time_minutes": config.max_time,
        "step_seconds": round(step_s, 4),
        "val_batch_seconds": round(val_s, 4),
        "draw_seconds_per_epoch": round(draw_s, 3),
        "steps_per_epoch": steps,
        "estimated_epoch_seconds": round(epoch_s, 2),
        "planned_epochs": epochs,
        "planned_steps": epochs * steps,
    }
