"""The experiment log: one row per recipe (runs that differ only in their seed), from ``results.json`` files.

``stnkit experiments DIR... --out docs/experiments/recipe.md`` finds every
``results.json`` below the given directories, groups the runs whose training
options agree apart from the seed, and writes a markdown table of the
**validation** error (mean ± sample standard deviation over seeds), the fit
time (marked "(GPU)", or "(GPU k/n)" for k of n seeds, for runs that trained
on a GPU: those compare with nothing on the CPU) and the command that reruns each row. Test
errors are left out on purpose: recipes are chosen on validation digits only.
"""

from __future__ import annotations

import json
import os
import statistics
from dataclasses import fields
from pathlib import Path

from stnkit.models import options_unused_by
from stnkit.train.config import TrainConfig, as_flags
from stnkit.train.report import markdown_table

# options that say where or how a run executed, not what it learned
_NOT_RECIPE = {"seed", "accelerator", "devices", "num_nodes", "strategy", "num_workers", "test_size", "test_seed"}


def find_results(paths: list[str | os.PathLike]) -> list[Path]:
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_file() and p.name == "results.json":
            found.append(p)
        elif p.is_dir():
            found.extend(sorted(p.rglob("results.json")))
        else:
            raise FileNotFoundError(f"{p} is neither a results.json nor a directory")
    if not found:
        raise FileNotFoundError(f"no results.json below {', '.join(map(str, paths))}")
    return found


def _flags(config: dict, skip=("dataset", "model")) -> list[str]:
    """The options of a run that differ from what ``stnkit train --model M`` does by default, as flags."""
    defaults = TrainConfig.for_model(config["model"])
    unused = options_unused_by(config["model"], config.get("transform"))  # e.g. a CNN's --loc-lr-mult: not shown
    changed = {}
    for f in fields(TrainConfig):
        if f.name in _NOT_RECIPE or f.name in skip or f.name in unused:
            continue
        value = config.get(f.name, getattr(defaults, f.name))
        if value != getattr(defaults, f.name):
            changed[f.name] = value
    return as_flags(changed)


def _on_gpu(run: dict) -> bool:
    """Whether a run trained on a GPU: its recorded device, or for runs that predate that
    record, an explicit ``--accelerator gpu``."""
    device = run["result"].get("device")
    if device is not None:
        return not str(device).startswith("cpu")
    return run["config"].get("accelerator") in ("gpu", "cuda")


def _gpu_mark(gpu_runs: int, runs: int) -> str:
    if gpu_runs == 0:
        return ""
    return " (GPU)" if gpu_runs == runs else f" (GPU {gpu_runs}/{runs})"


def experiment_rows(paths: list[str | os.PathLike]) -> list[dict]:
    groups: dict[str, list[dict]] = {}
    for f in find_results(paths):
        r = json.loads(f.read_text())
        c = TrainConfig.from_dict(r["config"]).to_dict()
        key = json.dumps({k: v for k, v in c.items() if k not in _NOT_RECIPE}, sort_keys=True)
        groups.setdefault(key, []).append({"config": c, "result": r, "file": str(f)})
    rows = []
    for runs in groups.values():
        runs.sort(key=lambda g: g["config"]["seed"])
        c = runs[0]["config"]
        vals = [g["result"]["best_val_error"] for g in runs]
        fits = [g["result"]["fit_seconds"] for g in runs]
        seeds = [g["config"]["seed"] for g in runs]
        flags = _flags(c)
        seed_text = str(seeds[0]) if len(seeds) == 1 else "{" + ",".join(map(str, seeds)) + "}"
        rows.append(
            {
                "change": " ".join(flags) or "(defaults)",
                "dataset": c["dataset"],
                "model": c["model"],
                "seeds": seeds,
                "val_error_mean": statistics.mean(vals),
                "val_error_std": statistics.stdev(vals) if len(vals) > 1 else None,
                "val_errors": vals,
                "fit_seconds_mean": statistics.mean(fits),
                # fit times on a GPU are not comparable with the CPU rows: marked in the table
                "gpu_runs": sum(_on_gpu(g) for g in runs),
                "epochs": [g["result"]["epochs"] for g in runs],
                "commits": sorted({str(g["result"].get("git_commit", ""))[:10] for g in runs}),
                "command": " ".join(
                    [
                        "stnkit train",
                        f"--dataset {c['dataset']}",
                        f"--model {c['model']}",
                        *flags,
                        f"--seed {seed_text}",
                    ]
                ),
                "files": [g["file"] for g in runs],
            }
        )
    rows.sort(key=lambda r: (r["dataset"], r["model"], r["change"]))
    return rows


def render_log(rows: list[dict], title: str = "Experiment log") -> str:
    lines = [
        f"# {title}",
        "",
        "Generated by `stnkit experiments` from the `results.json` files listed in the JSON beside this file. "
        "Validation error = the best epoch's error on the validation digits carved from the training split "
        "(mean ± sample std over seeds); the test split plays no part in any choice.",
        "",
    ]
    header = ["change (vs `stnkit train` defaults)", "dataset", "model", "seeds", "val error %", "fit time", "command"]
    table = []
    for r in rows:
        err = f"{r['val_error_mean']:.2f}" + (f" ± {r['val_error_std']:.2f}" if r["val_error_std"] is not None else "")
        table.append(
            [
                r["change"],
                r["dataset"],
                r["model"],
                len(r["seeds"]),
                err,
                f"{r['fit_seconds_mean'] / 60:.1f} min" + _gpu_mark(r.get("gpu_runs", 0), len(r["seeds"])),
                f"`{r['command']}`",
            ]
        )
    lines += markdown_table(header, table)
    return "\n".join(lines) + "\n"
