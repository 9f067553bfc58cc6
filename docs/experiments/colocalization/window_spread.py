"""Where the trained constrained windows go, on the test canvases (seed 0 of `results/colocalization-constrained/`; no training).

    PYTHONPATH=src python docs/experiments/colocalization/window_spread.py

Writes docs/experiments/colocalization/window_spread.json: per kind and class, the spread (std, px)
of the predicted windows' centres and of the digits' centres, and the correlation between the window's
x (y) and the digit's x (y) over the problem's 100 canvases. Negative: the window moves away from the digit.
"""

import json
from pathlib import Path

import torch

from stnkit.data import load_digits
from stnkit_experiments import colocalization as co

digits = load_digits("train"), load_digits("test")
out = {}
for kind in ("plain", "cluttered"):
    for d in range(10):
        run = co.run_dir_of(Path("results/colocalization-constrained"), kind, d, 0)
        cfg = co.ColocConfig.from_dict(json.loads((run / "results.json").read_text())["config"])
        ds = co.problem_canvases(cfg, *digits)[0]
        b = co.predicted_boxes(co.load_transformer(run / "model.safetensors"), ds.images)
        c, t = (b[:, :2] + b[:, 2:]) / 2, (ds.boxes[:, :2] + ds.boxes[:, 2:]) / 2
        corr = [float(torch.corrcoef(torch.stack([c[:, i], t[:, i]]))[0, 1]) for i in (0, 1)]
        out.setdefault(kind, {})[str(d)] = {
            "window_centre_std_px": [round(float(v), 2) for v in c.std(0)],
            "digit_centre_std_px": [round(float(v), 2) for v in t.std(0)],
            "corr_window_digit_xy": [round(v, 3) for v in corr],
        }
for kind, rows in out.items():
    n = len(rows)
    out[kind]["mean"] = {
        "window_centre_std_px": round(sum(sum(r["window_centre_std_px"]) / 2 for r in rows.values()) / n, 2),
        "corr_window_digit": round(sum(sum(r["corr_window_digit_xy"]) / 2 for r in rows.values()) / n, 3),
    }
Path(__file__).with_name("window_spread.json").write_text(json.dumps(out, indent=2) + "\n")
print(json.dumps({k: v["mean"] for k, v in out.items()}))
