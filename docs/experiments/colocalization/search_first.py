"""The search alone from the two first rounds (`first`: start window crops, or each other canvas's best match),
on VALIDATION canvases; prints % IoU>0.5 of the searched windows per round and each round's loss (issue 28).
Run from the repository root: PYTHONPATH=src python docs/experiments/colocalization/search_first.py KIND DIGITS ROUNDS FIRSTS
"""

import sys
import time
from pathlib import Path

import torch

from stnkit.data import load_digits
from stnkit_experiments import colocalization as co

torch.set_num_threads(1)
kind, digits, rounds = sys.argv[1], [int(d) for d in sys.argv[2].split(",")], int(sys.argv[3])
firsts = sys.argv[4].split(",")
train, test = load_digits("train"), load_digits("test")
cnn = co.load_or_train_encoder(Path("runs/coloc-val/encoder/encoder-seed0.safetensors"), *train, seed=0, epochs=2)
enc = co.DigitEncoder(cnn, "logits_l2").eval()
for d in digits:
    cfg = co.ColocConfig(digit=d, kind=kind, split="val", init_scale=1 / 3, learn_scale=False, descriptor="logits_l2")
    ds = co.problem_canvases(cfg, train, test)[0]
    start = torch.tensor([[1 / 3, 0.0, 0.0]], dtype=torch.float64).expand(len(ds), 3)
    for first in firsts:
        t0, h = time.time(), []
        _, loss = co.search_windows(enc, ds.images, start, rounds, 4, 1.0, history=h, first=first)
        pct = [co.box_score(w, ds)["correct_percent"] for w in h]
        print(f"{kind} {d} first={first}: % {pct} loss {loss} ({time.time() - t0:.0f} s)", flush=True)
