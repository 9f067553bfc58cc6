"""The search alone (no net) from three first rounds, on VALIDATION canvases (issue 28).

FIRSTS, comma-separated: ``start`` (the first round against the centred 28x28 start window's crops),
``best`` (against each other canvas's nearest window) and ``truth`` (a diagnostic, not a method: the first
round against the true boxes' crops, to see whether the digits are a low point of the loss).
Prints per round the % of canvases whose searched window has IoU > 0.5, the search's loss, and the mean
ink (pixel value) of the final windows' crops beside the true boxes' and random 28x28 patches'.

Run from the repository root:
    PYTHONPATH=src python docs/experiments/colocalization/search_first.py KIND DIGITS ROUNDS FIRSTS
The encoder is the seed-0 one of `stnkit reproduce colocalization` (2 epochs), cached under runs/coloc-val/encoder.
"""

import sys
import time
from pathlib import Path

import torch

from stnkit.data import load_digits
from stnkit.geometry import attention_from_box, warp
from stnkit_experiments import colocalization as co

torch.set_num_threads(1)
kind, digits, rounds = sys.argv[1], [int(d) for d in sys.argv[2].split(",")], int(sys.argv[3])
firsts = sys.argv[4].split(",")
train, test = load_digits("train"), load_digits("test")
cnn = co.load_or_train_encoder(Path("runs/coloc-val/encoder/encoder-seed0.safetensors"), *train, seed=0, epochs=2)
enc = co.DigitEncoder(cnn, "logits_l2").eval()


def ink(images, params):
    return float(warp(images, params.float(), "attention", out_size=28).mean())


for d in digits:
    cfg = co.ColocConfig(digit=d, kind=kind, split="val", init_scale=1 / 3, learn_scale=False, descriptor="logits_l2")
    ds = co.problem_canvases(cfg, train, test)[0]
    centre = torch.tensor([[1 / 3, 0.0, 0.0]], dtype=torch.float64).expand(len(ds), 3)
    truth = attention_from_box(ds.boxes.double(), 84)
    rand = float(co.random_patches(ds.images, torch.Generator().manual_seed(0)).mean())
    for first in firsts:
        t0, h = time.time(), []
        start = truth if first == "truth" else centre
        w, loss = co.search_windows(
            enc, ds.images, start, rounds, 4, 1.0, history=h, first="best" if first == "best" else "start"
        )
        pct = [co.box_score(x, ds)["correct_percent"] for x in h]
        print(
            f"{kind} {d} first={first}: % {pct} loss {loss}; ink: windows {ink(ds.images, w):.3f}, "
            f"truth {ink(ds.images, truth):.3f}, random {rand:.3f} ({time.time() - t0:.0f} s)",
            flush=True,
        )
