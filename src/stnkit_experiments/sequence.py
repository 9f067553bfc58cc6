"""``stnkit reproduce sequence``: Sonderby et al. 2015's cluttered MNIST sequences on our data.

Three models on the ``sequence`` dataset (:mod:`stnkit.data.sequence`): ``seq-cnn``
(the paper's CNN), ``seq-st-cnn`` (its CNN-SPN) and ``rnn-spn``. Each run is one
``stnkit train`` run in ``OUT/runs/sequence/MODEL/seedS`` through
:func:`~stnkit_experiments.table1.run_cell` (a finished run is never trained again,
an interrupted one resumes from its ``last.ckpt``); after each run
``sequence.json`` and ``sequence.md`` are rewritten, and
``figures/sequence_attention.png`` shows where each step of RNN-SPN (and the
ST-CNN's one transformer) looked.
"""

from __future__ import annotations

from pathlib import Path

from stnkit._io import save_figure
from stnkit.train.config import TrainConfig
from stnkit.train.report import markdown_table

from .table1 import (
    STATS_DIGITS,
    Cell,
    _mean_std,
    cell_record,
    error_stats,
    finished_cells,
    machine_info,
    previous_wall_seconds,
    run_cells,
    write_summary,
)

DATASET = "sequence"
# Sonderby et al. 2015, abstract: per-digit % error (CNN, CNN-SPN, RNN-SPN)
PAPER_SEQUENCE = {"seq-cnn": 2.9, "seq-st-cnn": 2.0, "rnn-spn": 1.5}
SEQUENCE_ROWS = tuple(PAPER_SEQUENCE)
LABELS = {"seq-cnn": "CNN", "seq-st-cnn": "CNN-SPN (ST-CNN)", "rnn-spn": "RNN-SPN"}
# 12 epochs of the 6,500 bundled training sequences: about 2 h for the three models on
# 2 loaded CPU cores (measured step times; docs in the notes)
SEQUENCE_DEFAULTS = TrainConfig(dataset=DATASET, model="rnn-spn", epochs=12, patience=None, loc_downsample=2)


def sequence_cells(models=SEQUENCE_ROWS, seeds: int = 1) -> list[Cell]:
    """The runs of the target: every model in ``models`` with seeds ``0 .. seeds - 1``."""
    return [Cell(DATASET, model, seed) for model in models for seed in range(seeds)]


def run_dir(out: Path, model: str, seed: int) -> Path:
    return out / "runs" / Cell(DATASET, model, seed).dirname


def sequence_config(model: str, seed: int, base: TrainConfig = SEQUENCE_DEFAULTS, options: dict | None = None):
    """One run's configuration: ``base``, the ``options`` given, then the model, dataset and seed."""
    return base.replace(**(options or {})).replace(model=model, dataset=DATASET, seed=seed, transform="affine")


def summarize_sequence(out: Path, base: TrainConfig, models=SEQUENCE_ROWS, seeds: int = 1, wall=None) -> dict:
    """Every finished run under ``out/runs/sequence`` in one record."""
    runs, table = [], {}
    for cell, results in finished_cells(out, sequence_cells(models, seeds)):
        record = cell_record(cell, results)
        runs.append(
            {
                "model": cell.row,
                "seed": cell.seed,
                "test_error": record["test_error"],
                "sequence_error": results.get("sequence_error"),
                **{k: record[k] for k in ("best_val_error", "epochs", "fit_seconds", "num_parameters", "train_size")},
            }
        )
    for model in models:
        done = [r for r in runs if r["model"] == model]
        stats = error_stats(done)
        if stats:
            seqs = [r["sequence_error"] for r in done]
            sm = None if None in seqs else _mean_std(seqs)[0]
            table[model] = {
                "digit_error": stats["mean"],
                "std": stats["std"],
                "sequence_error": None if sm is None else round(sm, STATS_DIGITS),
                "n": stats["n"],
            }
    return {
        "description": "Sonderby et al. 2015 cluttered MNIST sequences reproduced by `stnkit reproduce sequence`",
        "runs_planned": len(models) * seeds,
        "runs_done": len(runs),
        "seeds": seeds,
        "base_config": base.to_dict(),
        "machine": machine_info(),
        "wall_seconds": wall,
        "table": table,
        "paper": PAPER_SEQUENCE,
        "runs": runs,
    }


def render_sequence_markdown(summary: dict) -> str:
    """sequence.md: our per-digit and sequence % test error beside the paper's per-digit error."""
    rows = []
    for model, paper in PAPER_SEQUENCE.items():
        ours = summary["table"].get(model)
        if ours is None:
            digit, seq = "–", "–"
        else:
            digit = f"**{ours['digit_error']:.2f}**" + (f" ± {ours['std']:.2f}" if ours["std"] is not None else "")
            seq = "–" if ours["sequence_error"] is None else f"{ours['sequence_error']:.2f}"
        rows.append([LABELS[model], digit, f"{paper}", seq])
    lines = markdown_table(["model", "digit error % (ours)", "paper", "sequence error % (ours)"], rows)
    lines += [
        "",
        f"Runs done: {summary['runs_done']}/{summary['runs_planned']} ({summary['seeds']} seed(s) per model). "
        "Per-digit error counts each of the 3 digits; sequence error counts a sequence wrong when any digit is. "
        "The paper (Sonderby et al. 2015, arXiv 1509.05329) trained on full MNIST; ours on the bundled digits.",
    ]
    return "\n".join(lines) + "\n"


def write_sequence_outputs(out: Path, summary: dict) -> None:
    write_summary(out, DATASET, summary, render_sequence_markdown(summary))


def run_sequence(
    out: Path, base: TrainConfig = SEQUENCE_DEFAULTS, models=SEQUENCE_ROWS, seeds: int = 1, options=None, quiet=True
) -> dict:
    """Train every run not yet finished (:func:`~stnkit_experiments.table1.run_cells`); returns the
    summary (also written to ``out``)."""
    previous = previous_wall_seconds(out / "sequence.json")

    def report(wall_seconds: float) -> dict:
        return summarize_sequence(out, base, models, seeds, round(previous + wall_seconds, 1))

    def config_of(cell: Cell) -> TrainConfig:
        return sequence_config(cell.row, cell.seed, base, options)

    return run_cells(out, sequence_cells(models, seeds), config_of, report, write_sequence_outputs, DATASET, quiet)


def _window(family, params, h: int, w: int):
    """The corners (pixels, closed polygon) of the input region a transform reads: ``(B, 5, 2)``."""
    import torch

    c = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0]], dtype=params.dtype)
    p = family.transform_points(params, c.expand(params.shape[0], -1, -1).contiguous())
    return torch.stack([((p[..., 0] + 1) * w - 1) / 2, ((p[..., 1] + 1) * h - 1) / 2], dim=-1)


def attention_figure(out: Path, n: int = 6) -> Path | None:
    """``out/figures/sequence_attention.png``: test canvases with the ground-truth boxes (grey,
    dashed), each RNN-SPN step's window (one colour per step) and the ST-CNN's window."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from stnkit.train.checkpoint import load_model
    from stnkit.train.evaluate import load_test_set, predict_logits

    rows = [m for m in ("rnn-spn", "seq-st-cnn") if (run_dir(out, m, 0) / "model.safetensors").is_file()]
    if not rows:
        return None
    fig, axes = plt.subplots(len(rows), n, figsize=(1.9 * n, 2.1 * len(rows)), squeeze=False)
    colours = ("tab:red", "tab:green", "tab:blue")
    for r, name in enumerate(rows):
        model, cfg = load_model(run_dir(out, name, 0) / "model.safetensors")
        ds = load_test_set(cfg, size=n)
        x = ds.images[:n]
        with torch.no_grad():
            pred = predict_logits(model, x).argmax(-1)
            if name == "rnn-spn":
                _, params = model.attend(x)
                family = model.family
            else:
                _, plist = model.warp_input(x)
                params, family = plist[0][:, None], model.transformer.family
        h, w = x.shape[-2:]
        for j in range(min(n, x.shape[0])):
            ax = axes[r, j]
            ax.imshow(x[j, 0].numpy(), cmap="gray", vmin=0, vmax=1)
            for x0, y0, x1, y1 in ds.boxes[j].tolist():
                ax.plot(
                    [x0 - 0.5, x1 - 0.5, x1 - 0.5, x0 - 0.5, x0 - 0.5],
                    [y0 - 0.5, y0 - 0.5, y1 - 0.5, y1 - 0.5, y0 - 0.5],
                    color="0.7",
                    ls="--",
                    lw=0.7,
                )
            for k in range(params.shape[1]):
                poly = _window(family, params[j : j + 1, k], h, w)[0]
                ax.plot(
                    poly[:, 0].numpy(),
                    poly[:, 1].numpy(),
                    color=colours[k % 3] if name == "rnn-spn" else "tab:orange",
                    lw=1.2,
                )
            ok = bool((pred[j] == ds.labels[j]).all())
            ax.set_title("".join(str(int(v)) for v in pred[j]), fontsize=8, color="k" if ok else "r")
            ax.set_xlim(-0.5, w - 0.5)
            ax.set_ylim(h - 0.5, -0.5)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(LABELS[name], fontsize=8)
    fig.suptitle("where each step attended (RNN-SPN steps 1-3: red, green, blue; ground truth dashed)", fontsize=9)
    fig.tight_layout()
    path = out / "figures" / "sequence_attention.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path, dpi=100)
    plt.close(fig)
    return path
