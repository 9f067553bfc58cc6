"""Collect the RESULT lines of the validation sweeps (parts_recipe_log2.txt: sweep 2, the conv localiser;
parts_recipe_log3.txt: sweep 3, heatmap localisers) into results/parts_recipe.json, which
`stnkit reproduce parts` prints on the page as the recipe note.

Run from the repository root: python docs/experiments/parts_recipe_table.py
"""

import json
from pathlib import Path

rows = []
for sweep, log in ((2, "parts_recipe_log2.txt"), (3, "parts_recipe_log3.txt")):
    for line in (Path("docs/experiments") / log).read_text().splitlines():
        if not line.startswith("RESULT "):
            continue
        if sweep == 2:  # RESULT name accuracy coverage (1,500 training scenes)
            _, name, acc, cov = line.split(" ", 3)
            train = 1500
        else:  # RESULT name train_size accuracy coverage
            _, name, train, acc, cov = line.split(" ", 4)
        cov = json.loads(cov)
        per = cov["per_transformer"]
        rows.append(
            {
                "sweep": sweep,
                "name": name,
                "train_size": int(train),
                "val_accuracy": float(acc),
                "val_divided": cov["divided"],
                "val_part_a": [p["part_a"] for p in per],
                "val_part_b": [p["part_b"] for p in per],
                "val_either": [p["either"] for p in per],
                "val_mean_scale": [p["mean_scale"] for p in per],
            }
        )
Path("results/parts_recipe.json").write_text(json.dumps({"split": "val", "rows": rows}, indent=2) + "\n")
print(json.dumps(rows, indent=1))
