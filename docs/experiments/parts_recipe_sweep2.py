"""Issue 28: the localisation learning rate and start windows of st-2x, on the VALIDATION scenes (seed 1).

Run: PYTHONPATH=src python docs/experiments/parts_recipe_sweep2.py NAME... (log: parts_recipe_log2.txt).
The test split is rendered with 16 scenes only (train_row needs one) and never read for a choice.
"""
import json, sys, torch
torch.set_num_threads(1)
from pathlib import Path
from stnkit_experiments.parts import config_with, load_data, train_row
base = dict(train_size=1500, val_size=300, test_size=16, epochs=6)
cfgs = {
 "st-2x-loc1": ("st-2x", dict(loc_lr_mult=1.0, init_scale=1.0, init_spread=0.0)),
 "st-2x-loc1-s04": ("st-2x", dict(loc_lr_mult=1.0, init_scale=0.4, init_spread=0.5)),
 "st-2x-loc5-s04": ("st-2x", dict(loc_lr_mult=5.0, init_scale=0.4, init_spread=0.5)),
 "st-2x-loc1-e20": ("st-2x", dict(loc_lr_mult=1.0, init_scale=1.0, init_spread=0.0, epochs=20)),
 "st-2x-loc1-s04-e20": ("st-2x", dict(loc_lr_mult=1.0, init_scale=0.4, init_spread=0.5, epochs=20)),
 "st-2x-loc1-s06-e20": ("st-2x", dict(loc_lr_mult=1.0, init_scale=0.6, init_spread=0.4, epochs=20)),
}
data = load_data(config_with(**base))
for name in sys.argv[1:]:
    row, opts = cfgs[name]
    c = config_with(**{**base, **opts})
    r = train_row(Path("/tmp/partsval2")/name, row, c, data, log=lambda m: print(name, m, flush=True))
    print("RESULT", name, r["val_accuracy"], json.dumps(r["val_coverage"]), flush=True)
