"""Pilot (validation pairs only): IC refinement needs a network that has also seen small residuals. The
supervised homography-net recipe in a plain loop (8 epochs of 2,048 fresh pairs, batch 16, AdamW 1e-3 with
weight decay 1e-4 on the weights, cosine by epoch, half the squared corner error), where a fraction MIX of
each epoch's training pairs has its offsets scaled down by a factor uniform in [0, 1] (the rest: the
protocol's offsets, up to 32 px). MIX 0 is the same loop without it (the control). Then, on the 256
validation pairs: one step, and IC refinement re-cropped from the photograph (2 and 4 steps), and the
network's answer on two identical patches (the right answer: 0 px).

    OMP_NUM_THREADS=1 PYTHONPATH=src python docs/experiments/homography/small_residuals_pilot.py MIX \
        > docs/experiments/homography/small_residuals_pilot_mMIX.txt
"""

import sys
import time

import numpy as np
import torch

from stnkit.data.homography import HomographyPatches
from stnkit.train import TrainConfig
from stnkit.train.checkpoint import build_model
from stnkit.train.losses import corner_loss
from stnkit_experiments.homography import VAL_SELECT_SIZE, draws, predict


class SmallResiduals(HomographyPatches):
    """Training pairs of which a fraction ``mix`` has its offsets scaled by a factor uniform in [0, 1]."""

    def __init__(self, *args, mix: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.mix = mix

    def draw(self, index):
        k, origin, offsets = super().draw(index)
        rng = np.random.default_rng([self.seed, self.epoch, index, 1])  # a stream of its own per pair
        if rng.random() < self.mix:
            offsets = offsets * float(rng.random())
        return k, origin, offsets


def err(o, y):
    e = (o - y).view(-1, 4, 2).norm(dim=2).mean(1)
    return f"mean {e.mean():.2f} median {e.median():.2f}"


def main(mix: float) -> None:
    torch.manual_seed(0)
    config = TrainConfig.for_model("homography-net", TrainConfig())
    model = build_model(config)
    pairs = draws("val", VAL_SELECT_SIZE, config.test_seed + 1_000)
    vx, vy = pairs["x"], pairs["y"]
    train = SmallResiduals("train", 2048, seed=0, fresh=True, mix=mix)
    decay = [p for p in model.parameters() if p.ndim > 1]
    rest = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 1e-4}, {"params": rest, "weight_decay": 0.0}], lr=1e-3)
    epochs, batch = 8, 16
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    print(f"mix {mix}; {len(vy)} validation pairs, identity {err(torch.zeros_like(vy), vy)}")
    best, best_state = float("inf"), None
    for epoch in range(epochs):
        t0 = time.time()
        train.set_epoch(epoch)
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(1000 + epoch))
        model.train()
        for i in range(0, len(order), batch):
            x, y = (torch.stack(t) for t in zip(*(train[int(j)] for j in order[i : i + batch])))
            loss, _, _ = corner_loss(model(x), x, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        model.eval()
        with torch.no_grad():
            e = (predict(model, vx, 1) - vy).view(-1, 4, 2).norm(dim=2).mean().item()
        if e < best:
            best, best_state = e, {k: v.clone() for k, v in model.state_dict().items()}
        print(f"epoch {epoch}: validation {e:.2f} px ({time.time() - t0:.0f} s)", flush=True)
    model.load_state_dict(best_state)  # the epoch with the lowest validation error, as stnkit train keeps
    model.eval()
    print(f"best epoch's net, {best:.2f} px:")
    for steps in (1, 2, 4):
        line = f"steps {steps}: warp P_A {err(predict(model, vx, steps), vy)}"
        if steps > 1:
            line += f"; re-crop {err(predict(model, vx, steps, source=pairs), vy)}"
        print(line, flush=True)
    with torch.no_grad():
        same = model(torch.cat([vx[:, 1:2], vx[:, 1:2]], dim=1)).view(-1, 4, 2).norm(dim=2).mean()
    print(f"the net on (P_B, P_B), identical patches: mean corner offset {float(same):.2f} px (the right answer: 0)")


if __name__ == "__main__":
    main(float(sys.argv[1]))
