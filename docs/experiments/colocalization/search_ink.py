"""How much ink the search recipe's windows hold where they miss (test canvases of `results/`, seed 0; no training).

    PYTHONPATH=src python docs/experiments/colocalization/search_ink.py

Writes docs/experiments/colocalization/search_ink.json: per cluttered class, the mean pixel value of the
fitted net's 28x28 crops, of the true boxes' crops and of random 28x28 patches, and the % localised.
"""

import json
from pathlib import Path

import torch

from stnkit.data import load_digits
from stnkit.geometry import attention_from_box, warp
from stnkit_experiments import colocalization as co

torch.set_num_threads(1)
train, test = load_digits("train"), load_digits("test")
out = {}
for d in range(10):
    run = co.run_dir_of(Path("results"), "cluttered", d, 0)
    result = json.loads((run / "results.json").read_text())
    ds = co.problem_canvases(co.ColocConfig.from_dict(result["config"]), train, test)[0]
    st = co.load_transformer(run / "model.safetensors")
    with torch.no_grad():
        windows = warp(ds.images, st.predict_params(ds.images), "attention", out_size=28)
        truth = warp(ds.images, attention_from_box(ds.boxes.double(), 84).float(), "attention", out_size=28)
        # not seed 0: CoLocalization draws digit 0's positions from the same stream, so those patches would be the digits
        rand = co.random_patches(ds.images, torch.Generator().manual_seed(12345))
    out[str(d)] = {
        "localised_percent": result["train"]["correct_percent"],
        "ink_windows": round(float(windows.mean()), 3),
        "ink_truth": round(float(truth.mean()), 3),
        "ink_random": round(float(rand.mean()), 3),
    }
    print(d, out[str(d)], flush=True)
Path("docs/experiments/colocalization/search_ink.json").write_text(json.dumps(out, indent=2) + "\n")
