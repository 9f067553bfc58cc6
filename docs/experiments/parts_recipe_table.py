"""Collect the RESULT lines of parts_recipe_log2.txt (validation scenes) into results/parts_recipe.json,
which `stnkit reproduce parts` prints on the page as the recipe note."""
import json, sys
from pathlib import Path
rows = []
for line in Path("docs/experiments/parts_recipe_log2.txt").read_text().splitlines():
    if line.startswith("RESULT "):
        _, name, acc, cov = line.split(" ", 3)
        cov = json.loads(cov)
        rows.append({"name": name, "val_accuracy": float(acc), "val_divided": cov["divided"],
                     "val_either": [p["either"] for p in cov["per_transformer"]],
                     "val_mean_scale": [p["mean_scale"] for p in cov["per_transformer"]]})
Path("results/parts_recipe.json").write_text(json.dumps({"split": "val", "rows": rows}, indent=2) + "\n")
print(json.dumps(rows, indent=1))
