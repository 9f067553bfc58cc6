"""The score of a window that never moves, on the validation canvases of the sweep (no training).

    PYTHONPATH=src python docs/experiments/colocalization/val_start_windows.py

Writes docs/experiments/colocalization/val_start_windows.json: for the whole canvas (s = 1, the
paper's start) and the centred 28x28 window (s = 1/3, the fixed-scale recipes' start), the % of
each class's validation canvases with IoU > 0.5 and the mean IoU.
"""

import json
from pathlib import Path

from stnkit.data import load_digits
from stnkit_experiments import colocalization as co

digits = load_digits("train"), load_digits("test")
out = {}
for kind in ("plain", "cluttered"):
    for name, s in (("whole canvas (s 1)", 1.0), ("centred 28x28 window (s 1/3)", 1 / 3)):
        rows = {}
        for d in (0, 2, 4, 6, 8):
            ds = co.problem_canvases(co.ColocConfig(digit=d, kind=kind, split="val"), *digits)[0]
            rows[str(d)] = co.start_window_score(s, ds)
        mean = round(sum(r["correct_percent"] for r in rows.values()) / len(rows), 2)
        out.setdefault(kind, {})[name] = {"mean_correct_percent": mean, "per_digit": rows}
path = Path(__file__).with_name("val_start_windows.json")
path.write_text(json.dumps(out, indent=2) + "\n")
print(json.dumps({k: {n: v["mean_correct_percent"] for n, v in w.items()} for k, w in out.items()}))
