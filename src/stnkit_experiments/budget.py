"""``stnkit reproduce budget``: the main job's models, each for the same minutes of fit (``--max-time``)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from stnkit._io import atomic_write_text
from stnkit.models import TRANSFORMER_MODELS
from stnkit.train.checkpoint import checkpoint_config
from stnkit.train.config import TrainConfig
from stnkit.train.provenance import git_commit
from stnkit.train.report import markdown_table
from stnkit.train.resume import HARDWARE_OPTIONS, check_resumable
from stnkit.train.run import train

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
