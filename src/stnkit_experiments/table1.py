"""``stnkit reproduce table1``: the paper's Table 1 (and cluttered MNIST) on our data.

Every cell is one ``stnkit train`` run in ``OUT/runs/DATASET/ROW/seedS``, ``ROW`` the
row's :func:`~stnkit.train.config.row_key` (``cnn``, ``st-cnn-affine``, ...). A
cell whose ``results.json`` exists is never trained again; an interrupted
cell resumes from its ``last.ckpt``. After each cell ``table1.json`` and
``table1.md`` are rewritten, so partial results are always on disk.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import time
from dataclasses import dataclass
from pathlib import Path

from stnkit._io import atomic_write_text, save_figure
from stnkit.models import MODEL_RECIPES, row_key, row_label, split_row_key
from stnkit.train.config import TrainConfig, as_flags
from stnkit.train.report import markdown_table, read_pose_spread

# Jaderberg et al. 2015, Table 1 (% error; R, RTS, P, E) and section 4.1 (TC), by row_key
PAPER = {
    "fcn": {"r": 2.1, "rts": 5.2, "p": 3.1, "e": 3.2, "tc": 13.2},
    "cnn": {"r": 1.2, "rts": 0.8, "p": 1.5, "e": 1.4, "tc": 3.5},
    "st-fcn-affine": {"r": 1.2, "rts": 0.8, "p": 1.5, "e": 2.7},
    "st-fcn-projective": {"r": 1.3, "rts": 0.9, "p": 1.4, "e": 2.6},
    "st-fcn-tps": {"r": 1.1, "rts": 0.8, "p": 1.4, "e": 2.4},
    "st-cnn-affine": {"r": 0.7, "rts": 0.5, "p": 0.8, "e": 1.2},
    "st-cnn-projective": {"r": 0.8, "rts": 0.6, "p": 0.8, "e": 1.3},
    "st-cnn-tps": {"r": 0.7, "rts": 0.5, "p": 0.8, "e": 1.1},
}
# the paper reports one ST-FCN and one ST-CNN number for TC, without the family
PAPER_TC_ST = {"st-fcn": 2.0, "st-cnn": 1.7}
TABLE1_DATASETS = ("r", "rts", "p", "e", "tc")
ROWS = tuple(PAPER)
MULTI_SEED_ROWS = ("cnn", "st-cnn-affine")
# Table 1's own options for a dataset's model, chosen on the validation split
# (docs/experiments/recipe.md, rows "tc cnn --epochs 20" and "tc st-cnn --st-size 30
# --epochs 60 --batch-size 32"): on TC the CNN and the ST-CNN train for about the same
# time. The ST-CNN's classifier sees the transformer's 30x30 output, so its epochs cost
# about a third of the CNN's on 60x60. Both take `stnkit train`'s half-size localisation
# input (loc_downsample 2, which a CNN ignores), as those experiments did.
# On R both are far from converged at 15 epochs (rows "r cnn --epochs 60" and "r st-cnn
# --loc-downsample 1 --epochs 60": validation 2.93 -> 1.53 % and 2.07 -> 0.67 %).
DATASET_OPTIONS: dict[tuple[str, str], dict] = {
    ("r", "cnn"): {"epochs": 60},
    ("r", "st-cnn"): {"epochs": 60},
    ("tc", "cnn"): {"epochs": 20, "loc_downsample": 2},
    ("tc", "st-cnn"): {"epochs": 60, "batch_size": 32, "loc_downsample": 2},
}
# the row whose transformer outputs make_figures draws
FIGURE_ROW = row_key("st-cnn", "affine")
README_START, README_END = "<!-- table1:start -->", "<!-- table1:end -->"


@dataclass(frozen=True)
class Cell:
    dataset: str
    row: str  # a row_key: "cnn", "st-cnn-affine", ...
    seed: int

    @property
    def model(self) -> str:
        return split_row_key(self.row)[0]

    @property
    def transform(self) -> str:
        """The row's family (``"affine"``, the default, for a plain classifier: it reads none)."""
        return split_row_key(self.row)[1] or "affine"

    @property
    def dirname(self) -> str:
        return f"{self.dataset}/{self.row}/seed{self.seed}"


def cells(datasets=TABLE1_DATASETS, rows=ROWS, seeds: int = 3) -> list[Cell]:
    out = []
    for d in datasets:
        for r in rows:
            for s in range(seeds if r in MULTI_SEED_ROWS else 1):
                out.append(Cell(d, r, s))
    return out


def cell_config(cell: Cell, base: TrainConfig, options: dict | None = None) -> TrainConfig:
    """The training configuration of one cell: ``base``, the cell model's own recipe
    (:data:`~stnkit.train.config.MODEL_RECIPES`), the dataset's options for that model
    (:data:`DATASET_OPTIONS`), the ``options`` given on the command line, then the cell's
    model and data.

    On the 60x60 cluttered canvas the transformers downsample to 30x30 before
    the classifier, as the paper did for its large inputs.
    """
    st_size = 30 if cell.dataset == "tc" and cell.model.startswith("st-") else None
    own = DATASET_OPTIONS.get((cell.dataset, cell.model), {})
    config = TrainConfig.for_model(cell.model, base, **{**own, **(options or {})})
    return config.replace(dataset=cell.dataset, transform=cell.transform, seed=cell.seed, st_size=st_size)


# digits the summaries store of a mean or std: the tables round once, to 2 (a stored 3-digit
# 0.265, from 0.2646, would print 0.27)
STATS_DIGITS = 6


def _mean_std(xs: list[float]) -> tuple[float, float | None]:
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, None
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def cell_record(cell: Cell, results: dict) -> dict:
    """What a summary keeps of one finished cell's ``results.json``."""
    return {
        "dataset": cell.dataset,
        "row": cell.row,
        "seed": cell.seed,
        "test_error": results["test_error"],
        "best_val_error": results.get("best_val_error"),
        "epochs": results["epochs"],
        "fit_seconds": results["fit_seconds"],
        "num_parameters": results["num_parameters"],
        "git_commit": results.get("git_commit"),
        "data_source": results["data_source"],
        "train_size": results["train_size"],
        "val_size": results["val_size"],
        "test_size": results["test_size"],
        "pose_spread": read_pose_spread(results),
    }


def finished_cells(out: Path, plan):
    """``(cell, results)`` for every cell of ``plan`` whose ``out/runs/CELL/results.json`` exists, in plan order."""
    for cell in plan:
        f = out / "runs" / cell.dirname / "results.json"
        if f.is_file():
            yield cell, json.loads(f.read_text())


def previous_wall_seconds(summary_file: Path) -> float:
    """The ``wall_seconds`` a target's summary file recorded (0 when there is none yet): earlier runs' time."""
    if not summary_file.is_file():
        return 0.0
    return json.loads(summary_file.read_text()).get("wall_seconds") or 0.0


def machine_info() -> dict:
    """The machine a summary was made on."""
    return {"platform": platform.platform(), "processor": platform.machine(), "cpus": os.cpu_count()}


def error_stats(records: list[dict]) -> dict | None:
    """Mean and sample std of the test errors of ``records`` (cells of one table entry); ``None`` if none."""
    if not records:
        return None
    m, s = _mean_std([c["test_error"] for c in records])
    return {"mean": round(m, STATS_DIGITS), "std": None if s is None else round(s, STATS_DIGITS), "n": len(records)}


def stats_text(stats: dict | None) -> str:
    """One table entry (:func:`error_stats`) in markdown: ``**mean** ± std``, ``**mean**`` for one run, ``–`` for none."""
    if stats is None:
        return "–"
    if stats["std"] is not None:
        return f"**{stats['mean']:.2f}** ± {stats['std']:.2f}"
    return f"**{stats['mean']:.2f}**"


def data_sizes(records: list[dict]) -> list[dict]:
    """The distinct training / validation / test sizes and data sources of ``records``."""
    sizes = {(c["train_size"], c["val_size"], c["test_size"], c["data_source"]) for c in records}
    return [{"train_size": a, "val_size": b, "test_size": c, "source": d} for a, b, c, d in sorted(sizes, key=str)]


def data_sentence(data: list[dict]) -> str:
    """The training data of a summary, in words."""
    if not data:
        return "no cell finished yet"
    return "; ".join(
        f"{d['train_size']} training / {d['val_size']} validation / {d['test_size']} test digits from {d['source']}"
        for d in data
    )


def summarize_grid(out: Path, base: TrainConfig, seeds: int = 3, wall_seconds: float | None = None) -> dict:
    """Collect every finished cell of the full grid under ``out/runs`` into one record."""
    plan = cells(TABLE1_DATASETS, ROWS, seeds)
    records = [cell_record(cell, results) for cell, results in finished_cells(out, plan)]
    table: dict[str, dict[str, dict]] = {}
    for row in ROWS:
        for d in TABLE1_DATASETS:
            stats = error_stats([c for c in records if c["row"] == row and c["dataset"] == d])
            if stats:
                table.setdefault(row, {})[d] = stats
    return {
        "description": "Jaderberg et al. 2015 Table 1 (+ cluttered MNIST) reproduced by `stnkit reproduce table1`",
        "cells_planned": len(plan),
        "cells_done": len(records),
        "seeds": seeds,
        "base_config": base.to_dict(),
        # each model's own recipe on top of base_config (every cell's full config is in its results.json)
        "model_recipes": {m: MODEL_RECIPES.get(m, {}) for m in dict.fromkeys(split_row_key(r)[0] for r in ROWS)},
        # then a dataset's own options for a model, "DATASET MODEL" -> options (DATASET_OPTIONS)
        "dataset_options": {f"{d} {m}": o for (d, m), o in DATASET_OPTIONS.items()},
        "data": data_sizes(records),
        "machine": machine_info(),
        "wall_seconds": wall_seconds,
        "table": table,
        "paper": PAPER,
        "paper_tc_st": PAPER_TC_ST,
        "cells": records,
    }


def _paper(row: str, dataset: str) -> float | None:
    if row in PAPER and dataset in PAPER[row]:
        return PAPER[row][dataset]
    if dataset == "tc":
        return PAPER_TC_ST.get(split_row_key(row)[0])
    return None


def render_markdown(summary: dict) -> str:
    """table1.md: our % test error beside the paper's, cell by cell."""
    rows = []
    for row in ROWS:
        cells_md = []
        for d in TABLE1_DATASETS:
            paper = _paper(row, d)
            txt = stats_text(summary["table"].get(row, {}).get(d))
            txt += f" ({paper})" if paper is not None else " (–)"
            cells_md.append(txt)
        rows.append([row_label(row), *cells_md])
    lines = markdown_table(["model", *(d.upper() for d in TABLE1_DATASETS)], rows)
    sizes = data_sentence(summary["data"])
    lines += [
        "",
        f"% test error, **ours** (paper in brackets; mean ± std over {summary.get('seeds', 3)} seeds for CNN and ST-CNN affine). "
        f"Cells done: {summary['cells_done']}/{summary['cells_planned']}.",
        f"Training data: {sizes}. The paper trained on the full 60,000-digit MNIST training set and tested on 10,000 digits; "
        "the paper's TC numbers for ST models do not name the transform family.",
    ]
    own = summary.get("dataset_options") or {}
    if own:
        lines.append(
            "Rows with their own options on a dataset (chosen on validation): "
            + "; ".join(f"{k.split()[0].upper()} {k.split()[1]}: " + " ".join(as_flags(o)) for k, o in own.items())
            + "."
        )
    return "\n".join(lines) + "\n"


def write_summary(out: Path, name: str, summary: dict, markdown: str) -> None:
    """A reproduce target's ``out/NAME.json`` (``summary``) and ``out/NAME.md`` (``markdown``), each written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / f"{name}.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(out / f"{name}.md", markdown)


def write_outputs(out: Path, summary: dict) -> None:
    write_summary(out, "table1", summary, render_markdown(summary))


def _legacy_row(key: str) -> str:
    """A row as table1.json files written before the one row key spelt it (``"st-cnn affine"``) -> its row key."""
    return key.replace(" ", "-")


def read_summary(out: Path) -> dict:
    """``out/table1.json``, with rows by :func:`~stnkit.train.config.row_key` whichever spelling it was written with.

    Files written before the one row key name rows ``"st-cnn affine"`` (in ``table``,
    ``paper`` and each cell's ``model``); they read as ``"st-cnn-affine"`` (each cell's ``row``).
    Their cells' ``pose_recovery`` reads as ``pose_spread``.
    """
    summary = json.loads((out / "table1.json").read_text())
    for name in ("table", "paper"):
        if name in summary:
            summary[name] = {_legacy_row(k): v for k, v in summary[name].items()}
    for cell in summary.get("cells", []):
        if "row" not in cell and "model" in cell:
            cell["row"] = _legacy_row(cell.pop("model"))
        if "pose_spread" not in cell and "pose_recovery" in cell:
            cell["pose_spread"] = cell.pop("pose_recovery")
    return summary


def check_readme(readme: Path, out: Path) -> list[str]:
    """Problems found comparing README's table block and table1.md with table1.json (empty: all agree)."""
    problems = []
    summary = read_summary(out)
    expected = render_markdown(summary)
    md = out / "table1.md"
    if not md.is_file() or md.read_text() != expected:
        problems.append(f"{md} does not match {out / 'table1.json'}")
    text = readme.read_text() if readme.is_file() else ""
    m = re.search(re.escape(README_START) + r"\n(.*?)" + re.escape(README_END), text, re.S)
    if m is None:
        problems.append(f"{readme} has no {README_START} ... {README_END} block")
    elif m.group(1) != expected:
        problems.append(f"the table in {readme} does not match {out / 'table1.json'}")
    return problems


def update_readme(readme: Path, out: Path) -> None:
    summary = read_summary(out)
    text = readme.read_text()
    block = f"{README_START}\n{render_markdown(summary)}{README_END}"
    pattern = re.escape(README_START) + r"\n.*?" + re.escape(README_END)
    if re.search(pattern, text, re.S) is None:
        raise ValueError(f"{readme} has no {README_START} ... {README_END} block to fill")
    atomic_write_text(readme, re.sub(pattern, lambda _: block, text, flags=re.S))


def run_cell(run_dir: Path, config: TrainConfig, quiet: bool = True) -> bool:
    """Train one run of a reproduction in ``run_dir`` unless it is finished; ``True`` if it trained.

    A run whose ``results.json`` exists is never trained again (but must have been made
    with ``config``, up to hardware options); an interrupted one resumes from its
    ``last.ckpt`` with the same schedule. Every reproduce target runs its runs through here.
    """
    from stnkit.train.checkpoint import checkpoint_config
    from stnkit.train.resume import HARDWARE_OPTIONS, check_resumable
    from stnkit.train.run import train

    if (run_dir / "results.json").is_file():
        # finished: never trained twice, but never mixed with other settings either
        saved = TrainConfig.from_dict(json.loads((run_dir / "results.json").read_text())["config"])
        check_resumable(saved, config, run_dir, HARDWARE_OPTIONS)
        return False
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.is_file():  # interrupted: it must go on with the same schedule
        check_resumable(checkpoint_config(last), config, last, HARDWARE_OPTIONS)
    train(config, run_dir, resume=True, quiet=quiet)
    return True


def run_table1(
    out: Path, base: TrainConfig, plan: list[Cell], seeds: int = 3, quiet_runs: bool = True, options: dict | None = None
) -> dict:
    """Train every cell of ``plan`` not yet finished (:func:`cell_config` with ``options``);
    returns the summary of the whole grid.

    Only rank 0 writes the tables (under DDP every rank runs this).
    """
    previous = previous_wall_seconds(out / "table1.json")

    def report(wall_seconds: float) -> dict:
        return summarize_grid(out, base, seeds, round(previous + wall_seconds, 1))

    return run_cells(
        out, plan, lambda cell: cell_config(cell, base, options), report, write_outputs, "table1", quiet_runs
    )


def run_cells(out: Path, plan: list[Cell], config_of, report, write, name: str, quiet_runs: bool = True) -> dict:
    """Train every cell of ``plan`` (in ``out/runs/CELL``) not yet finished; the machinery of every
    ``stnkit reproduce`` target.

    ``config_of(cell)`` is a cell's :class:`TrainConfig`; ``report(wall_seconds)`` the
    summary of all finished cells, which ``write(out, summary)`` writes after every cell
    (rank 0 only: under DDP every rank runs this). A cell with a ``results.json`` is
    never trained again (its settings must match); an interrupted one resumes from its
    ``last.ckpt``. Returns the final summary.
    """
    from tqdm.auto import tqdm

    from stnkit.train.provenance import git_commit
    from stnkit.train.run import is_rank_zero

    git_commit()  # the commit this process runs, read before any cell (the tree may change meanwhile)

    start = time.time()
    bar = tqdm(plan, desc=f"{name} cells", unit="cell")
    for cell in bar:
        bar.set_postfix_str(cell.dirname)
        if not run_cell(out / "runs" / cell.dirname, config_of(cell), quiet_runs):
            continue
        if is_rank_zero():
            write(out, report(time.time() - start))
    summary = report(time.time() - start)
    if is_rank_zero():
        write(out, summary)
    return summary


def make_figures(out: Path, summary: dict, n: int = 10) -> list[Path]:
    """``out/figures``: per dataset, test inputs and the ST-CNN (affine, seed 0)
    outputs (the paper's Figure 3 idea); and the error of every model per dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from stnkit.train.checkpoint import load_model
    from stnkit.train.evaluate import load_test_set

    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for d in TABLE1_DATASETS:
        model_file = out / "runs" / Cell(d, FIGURE_ROW, 0).dirname / "model.safetensors"
        if not model_file.is_file():
            continue
        model, cfg = load_model(model_file)
        ds = load_test_set(cfg, dataset=d, size=n)
        x = ds.images[:n]
        y, _ = model.warp_input(x)
        fig, axes = plt.subplots(2, n, figsize=(1.1 * n, 2.6), squeeze=False)
        for j in range(n):
            for r, img in enumerate((x[j, 0], y[j, 0])):
                axes[r, j].imshow(img.detach().numpy(), cmap="gray", vmin=0, vmax=1)
                axes[r, j].set_xticks([])
                axes[r, j].set_yticks([])
        axes[0, 0].set_ylabel("input", fontsize=8)
        axes[1, 0].set_ylabel("ST output", fontsize=8)
        fig.suptitle(f"{d.upper()}: test inputs and the {row_label(FIGURE_ROW)} outputs", fontsize=9)
        fig.tight_layout()
        path = fig_dir / f"{d}_st-cnn.png"
        save_figure(fig, path, dpi=100)
        plt.close(fig)
        written.append(path)
    table = summary["table"]
    if table:
        fig, ax = plt.subplots(figsize=(9, 3.8))
        width = 0.8 / len(ROWS)
        for i, row in enumerate(ROWS):
            means = [table.get(row, {}).get(d, {}).get("mean", np.nan) for d in TABLE1_DATASETS]
            stds = [table.get(row, {}).get(d, {}).get("std") or 0.0 for d in TABLE1_DATASETS]
            ax.bar(np.arange(len(TABLE1_DATASETS)) + i * width, means, width, yerr=stds, label=row_label(row))
        ax.set_xticks(np.arange(len(TABLE1_DATASETS)) + 0.4 - width / 2)
        ax.set_xticklabels([d.upper() for d in TABLE1_DATASETS])
        ax.set_ylabel("% test error")
        ax.set_title("stnkit reproduce table1: test error per model and dataset")
        ax.legend(fontsize=7, ncol=4)
        fig.tight_layout()
        path = fig_dir / "errors.png"
        save_figure(fig, path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written
