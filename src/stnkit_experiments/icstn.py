"""``stnkit reproduce icstn``: CNN, ST-CNN and IC-STN (1, 2, 4 steps) on perturbed MNIST.

Lin and Lucey, "Inverse Compositional Spatial Transformer Networks", CVPR 2017
(arXiv:1612.03897). Every cell is one ``stnkit train`` run in
``OUT/runs/perturbed/ROW/seedS`` (trained, skipped when finished or resumed by
:func:`~stnkit_experiments.table1.run_cell`, as for Table 1); after each cell
``icstn.json`` and ``icstn.md`` are rewritten, so partial results are always on disk.

The rows share one classifier (the project's CNN) and one localisation net (the
ST-CNN's), so they differ only in the transformer: none, one projective warp,
or 1, 2, 4 recurrent warps composed in parameter space.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stnkit._io import save_figure
from stnkit.train.config import TrainConfig
from stnkit.train.report import markdown_table

from .table1 import (
    cell_record,
    error_stats,
    finished_cells,
    machine_info,
    previous_wall_seconds,
    run_cells,
    stats_text,
    write_summary,
)

DATASET = "perturbed"
# row -> the options that make it (on top of the base config and the model's recipe)
ROWS: dict[str, dict] = {
    "cnn": {"model": "cnn"},
    "st-cnn-projective": {"model": "st-cnn", "transform": "projective"},
    "ic-stn-1": {"model": "ic-stn", "transform": "projective", "ic_steps": 1},
    "ic-stn-2": {"model": "ic-stn", "transform": "projective", "ic_steps": 2},
    "ic-stn-4": {"model": "ic-stn", "transform": "projective", "ic_steps": 4},
}
LABELS = {"cnn": "CNN", "st-cnn-projective": "ST-CNN (projective)"} | {f"ic-stn-{k}": f"IC-STN-{k}" for k in (1, 2, 4)}
# The IC-STN paper's perturbed-MNIST classification table was not found in the reference
# material searched (docs, pages, issues; the authors' repository has no numbers), so no
# paper number is shown: an entry is added here only from the paper itself.
PAPER: dict[str, float] = {}
FIGURE_ROW = "ic-stn-4"
# what icstn.json keeps of each cell's record (:func:`~stnkit_experiments.table1.cell_record`)
RECORD_KEYS = (
    "row",
    "seed",
    "test_error",
    "best_val_error",
    "epochs",
    "fit_seconds",
    "num_parameters",
    "git_commit",
    "train_size",
    "test_size",
    "data_source",
)
DEFAULT_SEEDS = 1


@dataclass(frozen=True)
class Cell:
    row: str
    seed: int

    @property
    def dataset(self) -> str:
        return DATASET

    @property
    def dirname(self) -> str:
        return f"{DATASET}/{self.row}/seed{self.seed}"


def cells(rows=tuple(ROWS), seeds: int = DEFAULT_SEEDS) -> list[Cell]:
    return [Cell(r, s) for r in rows for s in range(seeds)]


def cell_config(cell: Cell, base: TrainConfig, options: dict | None = None) -> TrainConfig:
    """``base``, the row model's recipe, the command line's ``options``, then the row's own options and the seed."""
    own = dict(ROWS[cell.row])
    model = own.pop("model")
    config = TrainConfig.for_model(model, base, **(options or {}))
    return config.replace(dataset=DATASET, seed=cell.seed, **own)


def summarize(out: Path, base: TrainConfig, seeds: int, wall_seconds: float | None = None) -> dict:
    """Every finished cell of the grid under ``out/runs`` in one record."""
    plan = cells(tuple(ROWS), seeds)
    records = []
    for cell, results in finished_cells(out, plan):
        record = cell_record(cell, results)
        records.append({k: record[k] for k in RECORD_KEYS})
    table = {}
    for row in ROWS:
        stats = error_stats([c for c in records if c["row"] == row])
        if stats:
            table[row] = stats
    return {
        "description": "Lin and Lucey 2017 (IC-STN), perturbed MNIST, reproduced by `stnkit reproduce icstn`",
        "dataset": DATASET,
        "cells_planned": len(plan),
        "cells_done": len(records),
        "seeds": seeds,
        "base_config": base.to_dict(),
        "rows": ROWS,
        "machine": machine_info(),
        "wall_seconds": wall_seconds,
        "table": table,
        "paper": PAPER,
        "cells": records,
    }


def render_markdown(summary: dict) -> str:
    """icstn.md: our % test error per row, beside the paper's where known."""
    rows = []
    for row in ROWS:
        ours = summary["table"].get(row)
        txt = stats_text(ours) + ("" if ours is None else f" (n={ours['n']})")
        paper = PAPER.get(row)
        rows.append([LABELS[row], txt, "–" if paper is None else f"{paper}"])
    sizes = sorted({(c["train_size"], c["test_size"], c["data_source"]) for c in summary["cells"]}, key=str)
    data = "; ".join(f"{a} training / {b} test digits from {c}" for a, b, c in sizes) or "no cell finished yet"
    lines = markdown_table(["model", "% test error (ours)", "paper"], rows)
    lines += [
        "",
        f"Perturbed MNIST (each corner moves by N(0, 0.25) plus a shared N(0, 0.25) translation, normalised units). "
        f"Mean ± std over {summary['seeds']} seed(s). Cells done: {summary['cells_done']}/{summary['cells_planned']}.",
        f"Training data: {data}. The paper's numbers were not found in the reference material searched, so none are shown.",
    ]
    return "\n".join(lines) + "\n"


def write_outputs(out: Path, summary: dict) -> None:
    write_summary(out, "icstn", summary, render_markdown(summary))


def run_icstn(
    out: Path, base: TrainConfig, plan: list[Cell], seeds: int, options: dict | None = None, quiet_runs: bool = True
) -> dict:
    """Train every cell of ``plan`` not yet finished (:func:`~stnkit_experiments.table1.run_cells`);
    returns the summary of the whole grid."""
    previous = previous_wall_seconds(out / "icstn.json")

    def report(wall_seconds: float) -> dict:
        return summarize(out, base, seeds, round(previous + wall_seconds, 1))

    return run_cells(
        out, plan, lambda cell: cell_config(cell, base, options), report, write_outputs, "icstn", quiet_runs
    )


def make_figure(out: Path, n: int = 6) -> Path | None:
    """``out/figures/icstn_steps.png``: test digits, then the input warped by the IC-STN-4 (seed 0) after each step.

    Each column after the first samples the **input** once with the warp composed so far.
    ``None`` when that run has not finished.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from stnkit.geometry.warp import sample
    from stnkit.train.checkpoint import load_model
    from stnkit.train.evaluate import load_test_set

    model_file = out / "runs" / Cell(FIGURE_ROW, 0).dirname / "model.safetensors"
    if not model_file.is_file():
        return None
    model, cfg = load_model(model_file)
    model.eval()
    x = load_test_set(cfg, size=n).images[:n]
    st = model.transformer
    with torch.no_grad():
        steps = [
            sample(x, st.grid(p, x.shape[-2:]), st.mode, st.padding_mode, st.align_corners) for p in st.step_params(x)
        ]
    cols = [x, *steps]
    fig, axes = plt.subplots(n, len(cols), figsize=(1.2 * len(cols), 1.2 * n), squeeze=False)
    for i in range(n):
        for j, img in enumerate(cols):
            axes[i, j].imshow(img[i, 0].numpy(), cmap="gray", vmin=0, vmax=1)
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
    for j in range(len(cols)):
        axes[0, j].set_title("input" if j == 0 else f"step {j}", fontsize=8)
    fig.suptitle("IC-STN-4 on perturbed MNIST: the input warped once by the warp composed so far", fontsize=8)
    fig.tight_layout()
    path = out / "figures" / "icstn_steps.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path, dpi=100)
    plt.close(fig)
    return path
