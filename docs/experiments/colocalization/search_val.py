"""The label-free window search alone (no net), round by round, on VALIDATION canvases (issue 28).

Run from the repository root: PYTHONPATH=src python docs/experiments/colocalization/search_val.py KINDS DIGITS ROUNDS [STRIDE] [DESCRIPTOR]
e.g. ... search_val.py plain,cluttered 0,1,2,3,4,5,6,7,8,9 4
Prints, per problem and round, the % of canvases whose searched window has IoU > 0.5 (box_score), and the means.
The encoder is the one `stnkit reproduce colocalization` caches (seed 0, 2 epochs), under runs/coloc-val/encoder.
"""

import json
import sys
import time
from pathlib import Path

import torch

from stnkit.data import load_digits
from stnkit_experiments import colocalization as co

torch.set_num_threads(1)
kinds = sys.argv[1].split(",")
digits = [int(d) for d in sys.argv[2].split(",")]
rounds = int(sys.argv[3])
stride = int(sys.argv[4]) if len(sys.argv) > 4 else 4
descriptor = sys.argv[5] if len(sys.argv) > 5 else "logits_l2"
train, test = load_digits("train"), load_digits("test")
cnn = co.load_or_train_encoder(Path("runs/coloc-val/encoder/encoder-seed0.safetensors"), *train, seed=0, epochs=2)
enc = co.DigitEncoder(cnn, descriptor).eval()
out = {}
for kind in kinds:
    per_round = [[] for _ in range(rounds)]
    for d in digits:
        cfg = co.ColocConfig(
            digit=d, kind=kind, split="val", init_scale=1 / 3, learn_scale=False, descriptor=descriptor
        )
        ds = co.problem_canvases(cfg, train, test)[0]
        w = torch.tensor([[1 / 3, 0.0, 0.0]], dtype=torch.float64).expand(len(ds), 3)
        t0 = time.time()
        row, history = [], []
        co.search_windows(enc, ds.images, w, rounds, stride, cfg.margin, history=history)
        for r, w in enumerate(history):
            pct = co.box_score(w, ds)["correct_percent"]
            per_round[r].append(pct)
            row.append(pct)
        print(f"{kind} {d}: " + " ".join(f"{p:.0f}" for p in row) + f"  ({time.time() - t0:.1f} s)", flush=True)
    out[kind] = [round(sum(p) / len(p), 2) for p in per_round]
    print(f"{kind} mean per round: {out[kind]}", flush=True)
print(json.dumps({"digits": digits, "stride": stride, "descriptor": descriptor, "mean_per_round": out}))
