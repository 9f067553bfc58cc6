"""IC refinement of the supervised net on the VALIDATION pairs: warping P_A only (zeros where the warp
reads outside it) against re-cropping P_A from the photograph at the estimated quadrilateral.

Run from the repository root: .venv/bin/python docs/experiments/homography/ic_recrop_probe.py
(the committed supervised cell, results/runs/homography/homography-net/seed0; 256 validation pairs,
seed test_seed + 1000, the pairs training validates on)."""

import torch

from stnkit.data.homography import PATCH, patch_corners
from stnkit.train.checkpoint import load_model
from stnkit.train.config import TrainConfig
from stnkit_experiments.homography import VAL_SELECT_SIZE, _recrop_step, draws, predict

model, _ = load_model("results/runs/homography/homography-net/seed0/model.safetensors")
config = TrainConfig.for_model("homography-net", TrainConfig())
pairs = draws("val", VAL_SELECT_SIZE, config.test_seed + 1_000)
x, y = pairs["x"], pairs["y"]


def err(o):
    e = (o - y).view(-1, 4, 2).norm(dim=2).mean(1)
    return f"mean {e.mean():.2f} median {e.median():.2f}"


print(f"{len(y)} validation pairs; identity {err(torch.zeros_like(y))}")
for steps in (1, 2, 3, 4, 6):
    line = [f"steps {steps}: warp P_A {err(predict(model, x, steps))}"]
    if steps > 1:
        line.append(f"re-crop {err(predict(model, x, steps, source=pairs))}")
    print("; ".join(line), flush=True)

# why neither converges: the net's answer where there is nothing to correct, and one re-crop step started
# near the truth (the composition itself is exact: a model answering zero from the truth returns the truth)
image = pairs["photos"][pairs["which"]].unsqueeze(1)
at = patch_corners(PATCH).expand(len(y), 4, 2) + pairs["origins"].view(-1, 1, 2)
with torch.no_grad():
    exact = _recrop_step(lambda t: torch.zeros(t.shape[0], 8), image, at, y, x[:, 1:2])
    print(f"zero residual from the truth: {err(exact)}")
    same = model(torch.cat([x[:, 1:2], x[:, 1:2]], dim=1)).view(-1, 4, 2).norm(dim=2).mean()
    print(f"the net on (P_B, P_B), identical patches: mean corner offset {float(same):.2f} px (the right answer: 0)")
    gen = torch.Generator().manual_seed(0)
    for s in (4.0, 8.0, 16.0):
        start = y + (torch.rand(y.shape, generator=gen) * 2 - 1) * s
        after = _recrop_step(model, image, at, start, x[:, 1:2])
        print(f"start at the truth + U(-{s:g}, {s:g}) px: {err(start)} -> after one re-crop step {err(after)}")
