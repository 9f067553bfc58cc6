import json, sys, torch
torch.set_num_threads(1)
from pathlib import Path
from stnkit_experiments.parts import config_with, load_data, train_row
base = dict(train_size=2000, val_size=500, test_size=100, epochs=5)
cfgs = {
 "st-2x-identity": ("st-2x", dict(init_scale=1.0, init_spread=0.0)),
 "st-2x-s05": ("st-2x", dict(init_scale=0.5, init_spread=0.5)),
 "st-2x-s05-loc1": ("st-2x", dict(init_scale=0.5, init_spread=0.5, loc_lr_mult=1.0)),
 "cnn": ("cnn", dict()),
 "st-2x-identity-loc1": ("st-2x", dict(init_scale=1.0, init_spread=0.0, loc_lr_mult=1.0)),
}
data = load_data(config_with(**base))
for name in sys.argv[1:]:
    row, opts = cfgs[name]
    c = config_with(**base, **opts)
    r = train_row(Path("/tmp/partsval")/name, row, c, data, log=lambda m: print(name, m, flush=True))
    print("RESULT", name, r["val_accuracy"], json.dumps(r["val_coverage"]), flush=True)
