"""Reports: the markdown tables of finished runs (``stnkit summarize``), and the one markdown table writer
that every table of the training layer (Table 1, budgets, the experiment log) goes through."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path


def markdown_table(header: Sequence[str], rows: Iterable[Sequence]) -> list[str]:
    """The lines of a markdown table: the header, the separator, one line per row (cells as ``str``).

    >>> print("\\n".join(markdown_table(["model", "error %"], [["cnn", 1.5]])))
    | model | error % |
    |---|---|
    | cnn | 1.5 |
    """
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"a row of {len(header)} columns expected, got {len(row)}: {row!r}")
        lines.append("| " + " | ".join(map(str, row)) + " |")
    return lines


# a results.json's pose spread (evaluate.pose_spread): its key, then the key of runs written before the one name
POSE_SPREAD_KEYS = ("pose_spread", "pose_recovery")


def read_pose_spread(results: dict) -> dict | None:
    """The pose spread of a run's ``results.json`` (``None`` for a model without a transformer), under either key."""
    return next((results[k] for k in POSE_SPREAD_KEYS if k in results), None)


def summarize(run_dirs: list[str | os.PathLike]) -> str:
    """A markdown table of finished runs, read from their ``results.json``."""
    header = [
        "model",
        "transform",
        "dataset",
        "consistency weight",
        "test error %",
        "best val error %",
        "epochs",
        "fit time",
        "parameters",
        "pose spread px (ST / none)",
    ]
    rows = []
    for d in run_dirs:
        f = Path(d) / "results.json"
        if not f.is_file():
            raise FileNotFoundError(f"{f} does not exist: is {d} a finished stnkit train run?")
        r = json.loads(f.read_text())
        c = r["config"]
        st = any(k in r for k in POSE_SPREAD_KEYS)  # a model with a transformer
        pr = read_pose_spread(r)
        spread = f"{pr['spread_st_px']:.2f} / {pr['spread_identity_px']:.2f}" if pr else "–"
        rows.append(
            [
                c["model"],
                c["transform"] if st else "–",
                c["dataset"],
                c["consistency_weight"] if st else "–",
                f"**{r['test_error']:.2f}**",
                f"{r['best_val_error']:.2f}",
                r["epochs"],
                f"{r['fit_seconds'] / 60:.1f} min",
                f"{r['num_parameters']:,}",
                spread,
            ]
        )
    lines = markdown_table(header, rows)
    first = json.loads((Path(run_dirs[0]) / "results.json").read_text())
    commits = list(
        dict.fromkeys(str(json.loads((Path(d) / "results.json").read_text())["git_commit"])[:10] for d in run_dirs)
    )
    lines += [
        "",
        f"Test: {first['test_size']} digits, fixed distortions (seed {first['config']['test_seed']}); "
        f"training: {first['train_size']} digits ({first['data_source']}), validation {first['val_size']}; "
        f"torch {first['torch']}, commit{'s' if len(commits) > 1 else ''} {', '.join(commits)}.",
    ]
    return "\n".join(lines) + "\n"
