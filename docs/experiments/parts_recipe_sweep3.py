"""Issue 28: heatmap (soft-argmax) localisers for the parts rows, on the VALIDATION scenes (seed 1).

Run: PYTHONPATH=src python docs/experiments/parts_recipe_sweep3.py TRAIN_SIZE NAME... (log: parts_recipe_log3.txt).
The test split is rendered with 16 scenes only (train_row needs one) and never read for a choice.
"""

import json
import sys
from pathlib import Path

import torch

from stnkit_experiments.parts import config_with, load_data, train_row

torch.set_num_threads(1)
CFGS = {
    # the committed recipe's st-2x (conv localiser, FC over a 4x4 pooled grid), for reference
    "st-2x-conv": ("st-2x", dict()),
    # heatmap localisers: fixed window scale, loc net reads the scene at 64 px (heatmaps at 32x32)
    "st-2x-hm-s025-l64": ("st-2x", dict(window_scale=0.25, loc_size=64)),
    "st-2x-hm-s020-l64": ("st-2x", dict(window_scale=0.20, loc_size=64)),
    "st-2x-hm-s030-l64": ("st-2x", dict(window_scale=0.30, loc_size=64)),
    "st-2x-hm-s025-l32": ("st-2x", dict(window_scale=0.25, loc_size=32)),
    # + each heatmap's pooled evidence names its part's glyph (A for transformer 0, B for 1): attention pooling
    "st-2x-hm-s025-l64-pw1": ("st-2x", dict(window_scale=0.25, loc_size=64, part_weight=1.0)),
    "st-2x-hm-s020-l64-pw1": ("st-2x", dict(window_scale=0.20, loc_size=64, part_weight=1.0)),
    "st-2x-hm-s030-l64-pw1": ("st-2x", dict(window_scale=0.30, loc_size=64, part_weight=1.0)),
    "st-2x-hm-s025-l64-pw03": ("st-2x", dict(window_scale=0.25, loc_size=64, part_weight=0.3)),
    # one change from st-2x-hm-s025-l64-pw1 each
    "st-2x-hm-s025-l64-pw1-t01": (
        "st-2x",
        dict(window_scale=0.25, loc_size=64, part_weight=1.0, heatmap_temperature=0.1),
    ),
    "st-2x-hm-s025-l64-pw3": ("st-2x", dict(window_scale=0.25, loc_size=64, part_weight=3.0)),
    "st-2x-hm-s030-l64-pw3": ("st-2x", dict(window_scale=0.30, loc_size=64, part_weight=3.0)),
    "st-2x-hm-s020-l64-pw3": ("st-2x", dict(window_scale=0.20, loc_size=64, part_weight=3.0)),
    "st-2x-hm-s025-l64-pw10": ("st-2x", dict(window_scale=0.25, loc_size=64, part_weight=10.0)),
    "st-2x-hm-s020-l64-pw10": ("st-2x", dict(window_scale=0.20, loc_size=64, part_weight=10.0)),
    "st-2x-hm-s030-l64-pw10": ("st-2x", dict(window_scale=0.30, loc_size=64, part_weight=10.0)),
    "st-2x-hm-s025-l64-pw30": ("st-2x", dict(window_scale=0.25, loc_size=64, part_weight=30.0)),
    "st-2x-hm-s025-l64-pw1-e12": ("st-2x", dict(window_scale=0.25, loc_size=64, part_weight=1.0, epochs=12)),
    "st-1x-hm-s025-l64-pw1": ("st-1x", dict(window_scale=0.25, loc_size=64, part_weight=1.0)),
    "st-4x-hm-s025-l64-pw1": ("st-4x", dict(window_scale=0.25, loc_size=64, part_weight=1.0)),
    "st-1x-hm-s025-l64": ("st-1x", dict(window_scale=0.25, loc_size=64)),
    "st-4x-hm-s025-l64": ("st-4x", dict(window_scale=0.25, loc_size=64)),
}
train_size = int(sys.argv[1])
base = dict(train_size=train_size, val_size=300, test_size=16, epochs=6)
cache = Path(f"/tmp/partsval3/data-n{train_size}.pt")  # the rendered scenes, kept between invocations
if cache.is_file():
    data = torch.load(cache, weights_only=False)
else:
    data = load_data(config_with(**base))
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(data, cache)
for name in sys.argv[2:]:
    row, opts = CFGS[name]
    c = config_with(**{**base, **opts})
    r = train_row(
        Path(f"/tmp/partsval3/n{train_size}") / name, row, c, data, log=lambda m, name=name: print(name, m, flush=True)
    )
    cov = r["val_coverage"]
    print("RESULT", name, train_size, round(r["val_accuracy"], 1), json.dumps(cov), flush=True)
