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

import math
import statistics
import time

import torch

from .config import TRANSFORMER_MODELS, TrainConfig
from .report import markdown_table

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


def plan_epochs(config: TrainConfig, n_train: int, n_val: int, repeat: int = 7) -> dict:
    """Epochs of ``config`` that fit in ``config.max_time`` minutes, from timed steps of its model."""
    from ..data import dataset_info, open_dataset
    from .checkpoint import build_model
    from .module import classification_loss

    if config.max_time is None:
        raise ValueError("plan_epochs needs config.max_time (minutes)")
    info = dataset_info(config.dataset)
    size = info.canvas_size
    bs = config.batch_size
    g = torch.Generator().manual_seed(0)
    x = torch.rand(bs, info.in_channels, size, size, generator=g)
    y = torch.randint(0, info.num_classes, (bs, info.num_labels) if info.num_labels > 1 else (bs,), generator=g)
    model = build_model(config)
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
    digits = torch.rand(min(n_train, 1024), 1, 28, 28, generator=g)
    ds = open_dataset(config.dataset, digits, torch.randint(0, 10, (len(digits),), generator=g), seed=0, fresh=True)
    epochs = iter(range(1, 10**6))
    draw_s = _median_seconds(lambda: ds.set_epoch(next(epochs)), 2, 1) * n_train / len(digits)
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


def plan_length(plan: dict) -> int:
    """The epochs a run with this ``budget.json`` record trains: the re-plan's once made, else the first plan's."""
    return plan.get("replanned_epochs", plan["planned_epochs"])


def replan_epochs(max_time_minutes: float, first_epoch_seconds: float) -> int:
    """Epochs that fit in the budget at the measured time of the first whole epoch (training,
    validation and the epoch's distortions), at least 2 (the first is done): the re-plan
    after the first epoch, which corrects the timed steps' estimate."""
    return max(2, int(BUDGET_FILL * max_time_minutes * 60.0 / max(first_epoch_seconds, 1e-6)))


BUDGET_MODELS = ("cnn", "st-cnn", "tutorial-cnn", "tutorial-stn")


def run_budget(
    out,
    dataset: str,
    minutes: float,
    base: TrainConfig | None = None,
    seeds: int = 3,
    models=BUDGET_MODELS,
    quiet: bool = True,
    **options,
) -> dict:
    """Train each of ``models`` for ``minutes`` of fit per seed (``--max-time``), each with its own recipe
    (``base``, then the model's recipe, then ``options``); write ``out/budget_DATASET.json`` and ``.md``.
    Finished runs are reused, interrupted ones resumed; the summary also keeps the other
    :data:`BUDGET_MODELS` whose runs of every seed are finished there."""
    import json
    from pathlib import Path

    from .._io import atomic_write_text
    from .checkpoint import checkpoint_config
    from .provenance import git_commit
    from .resume import HARDWARE_OPTIONS, check_resumable
    from .run import train

    git_commit()
    out = Path(out)
    records = []

    def config_of(model: str, seed: int) -> TrainConfig:
        config = TrainConfig.for_model(model, base, **{**options, "dataset": dataset, "seed": seed})
        return config.replace(max_time=minutes)

    def finished_alike(model: str) -> bool:
        """Every seed of ``model`` finished with this budget's options (a model not asked for is
        only reported, never trained; one made with other options is left out of the summary)."""
        for seed in range(seeds):
            done = out / "runs" / f"budget_{dataset}" / model / f"seed{seed}" / "results.json"
            if not done.is_file():
                return False
            saved = TrainConfig.from_dict(json.loads(done.read_text())["config"])
            try:
                check_resumable(saved, config_of(model, seed), done, HARDWARE_OPTIONS | {"epochs"})
            except ValueError:
                return False
        return True

    models = [m for m in BUDGET_MODELS if m in models or finished_alike(m)] + [
        m for m in models if m not in BUDGET_MODELS
    ]
    for model in models:
        for seed in range(seeds):
            run_dir = out / "runs" / f"budget_{dataset}" / model / f"seed{seed}"
            config = config_of(model, seed)
            done = run_dir / "results.json"
            if done.is_file():
                saved = TrainConfig.from_dict(json.loads(done.read_text())["config"])
                check_resumable(saved, config, run_dir, HARDWARE_OPTIONS | {"epochs"})
            else:
                last = run_dir / "checkpoints" / "last.ckpt"
                if last.is_file():
                    check_resumable(checkpoint_config(last), config, last, HARDWARE_OPTIONS | {"epochs"})
                train(config, run_dir, resume=True, quiet=quiet)
            r = json.loads(done.read_text())
            records.append(
                {
                    "model": model,
                    "seed": seed,
                    "test_error": r["test_error"],
                    "best_val_error": r["best_val_error"],
                    "steps": r["global_step"],
                    "samples_seen": r["global_step"] * r["config"]["batch_size"],
                    "epochs": r["epochs"],
                    "fit_seconds": r["fit_seconds"],
                    "parameters": r["num_parameters"],
                    "budget": r.get("budget"),
                    "recipe": _recipe(r["config"]),
                    "git_commit": r.get("git_commit"),
                }
            )
    summary = {"dataset": dataset, "minutes": minutes, "seeds": seeds, "runs": records, "models": {}}
    for model in models:
        rs = [r for r in records if r["model"] == model]
        errs = [r["test_error"] for r in rs]
        summary["models"][model] = {
            "test_error_mean": statistics.mean(errs),
            "test_error_std": statistics.stdev(errs) if len(errs) > 1 else None,
            "steps_mean": statistics.mean(r["steps"] for r in rs),
            "samples_seen_mean": statistics.mean(r["samples_seen"] for r in rs),
            "fit_seconds_mean": statistics.mean(r["fit_seconds"] for r in rs),
            "parameters": rs[0]["parameters"],
            "recipe": rs[0]["recipe"],
        }
    atomic_write_text(out / f"budget_{dataset}.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(out / f"budget_{dataset}.md", render_budget(summary))
    return summary


def _recipe(config: dict) -> dict:
    """The recipe fields a budget row shows; the localisation net's input size only for models with a transformer."""
    keys = ("optimizer", "lr", "batch_size", "schedule", "weight_decay")
    if config["model"] in TRANSFORMER_MODELS:
        keys += ("loc_lr_mult", "loc_downsample")
    return {k: config[k] for k in keys}


def render_budget(summary: dict) -> str:
    lines = [
        f"Equal budget on {summary['dataset']}: {summary['minutes']:g} min of fit per run, "
        f"{summary['seeds']} seed(s), each model with its own recipe (`stnkit reproduce budget`).",
        "",
    ]
    rows = []
    for model, m in summary["models"].items():
        err = f"{m['test_error_mean']:.2f}" + (f" ± {m['test_error_std']:.2f}" if m["test_error_std"] else "")
        rec = m["recipe"]
        recipe = f"{rec['optimizer']} lr {rec['lr']:g}, batch {rec['batch_size']}, {rec['schedule']}"
        if rec.get("loc_downsample"):
            n = rec["loc_downsample"]
            recipe += ", localisation net on the " + ("full input" if n == 1 else f"input averaged over {n}x{n}")
        rows.append(
            [
                model,
                f"**{err}**",
                f"{m['steps_mean']:,.0f}",
                f"{m['samples_seen_mean']:,.0f}",
                f"{m['fit_seconds_mean'] / 60:.1f} min",
                f"{m['parameters']:,}",
                recipe,
            ]
        )
    header = ["model", "test error %", "steps", "samples seen", "fit time", "parameters", "recipe"]
    lines += markdown_table(header, rows)
    return "\n".join(lines) + "\n"
