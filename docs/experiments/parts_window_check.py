"""Check a sweep-3 st-2x model on the 300 validation scenes: IoU hits, window centres inside the own part box.

Run: PYTHONPATH=src python docs/experiments/parts_window_check.py NAME SCALE PART_WEIGHT (a model of parts_recipe_sweep3.py)
"""

import sys

import torch

from stnkit.data.parts import PartsScenes
from stnkit.geometry import attention_box, box_iou
from stnkit_experiments.parts import build_row, config_with

torch.set_num_threads(1)

name, scale, pw = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
c = config_with(train_size=6000, val_size=300, test_size=16, epochs=6, window_scale=scale, loc_size=64, part_weight=pw)
m, _ = build_row("st-2x", c)
m.load_state_dict(torch.load(f"/tmp/partsval3/n6000/{name}/model.pt"))
m.eval()
ds = PartsScenes(300, seed=1)
x = torch.stack([ds[i][0] for i in range(300)])
with torch.no_grad():
    _, params = m.warp_input(x)
for t in range(2):
    win = attention_box(params[t], 128)
    box = ds.boxes[:, t]
    iou = box_iou(win, box)
    cx = (win[:, 0] + win[:, 2]) / 2
    cy = (win[:, 1] + win[:, 3]) / 2
    inside = (cx > box[:, 0]) & (cx < box[:, 2]) & (cy > box[:, 1]) & (cy < box[:, 3])
    side = ((box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1])).sqrt()
    miss = iou <= 0.5
    print(
        t,
        "IoU>0.5",
        (~miss).float().mean().item(),
        "centre inside own box",
        inside.float().mean().item(),
        "of misses centre inside",
        inside[miss].float().mean().item(),
        "mean box side of hits",
        side[~miss].mean().item(),
        "of misses inside",
        side[miss & inside].mean().item(),
    )
