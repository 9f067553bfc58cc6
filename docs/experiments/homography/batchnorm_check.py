"""The BatchNorm pilot of homography-net (8-epoch recipe, stopped in epoch 6): its last checkpoint's mean
corner error (px) on 64 pairs of each split, with BatchNorm's running statistics (eval) and with the batch's
own (train mode), beside the identity. Run: PYTHONPATH=src python docs/experiments/homography/batchnorm_check.py CKPT
(the pilot was made at commit 60dec65 with nn.BatchNorm2d; its checkpoint is not committed)."""

import sys

import torch

from stnkit.train.checkpoint import load_run
from stnkit.train.losses import mean_corner_error
from stnkit_experiments.homography import _pairs

model, _, _ = load_run(sys.argv[1])
for split, seed in [("val", 1000), ("test", 0), ("train", 5)]:
    x, y = _pairs(split, 64, seed)
    model.eval()
    with torch.no_grad():
        e_eval = float(mean_corner_error(model(x), y))
    model.train()
    with torch.no_grad():
        e_batch = float(mean_corner_error(model(x), y))
    e_id = float(mean_corner_error(torch.zeros_like(y), y))
    print(f"{split}: running statistics {e_eval:.2f}, batch statistics {e_batch:.2f}, identity {e_id:.2f}")
