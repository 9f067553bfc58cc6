"""Pilot (validation pairs only): does a curriculum of the corner offsets get the unsupervised network
off the identity? The training pairs' largest offset grows 8, 16, 24 px over the first three epochs, then
stays at the protocol's 32 px; validation is always at 32 px (the 256 fixed validation pairs of
`stnkit train --dataset homography`). Everything else is the registry's homography-unsup recipe (8 epochs
of 2,048 fresh pairs, batch 32, AdamW 1e-3, weight decay 1e-4 on the weights only, cosine schedule by
epoch, the photometric loss at full resolution), in a plain loop instead of the engine.

    OMP_NUM_THREADS=2 PYTHONPATH=src python docs/experiments/homography/curriculum_pilot.py WARMUP \
        > docs/experiments/homography/curriculum_pilot_wWARMUP.txt
WARMUP 0 is the recipe without the curriculum (the same loop, as a control)."""

import sys
import time

import numpy as np
import torch

from stnkit.data.homography import RHO, HomographyPatches, homography_splits
from stnkit.train import TrainConfig
from stnkit.train.checkpoint import build_model
from stnkit.train.losses import mean_corner_error, photometric_loss


class Curriculum(HomographyPatches):
    """Training pairs whose largest offset is ``RHO * (e + 1) / (warmup + 1)`` in epoch ``e < warmup``."""

    def __init__(self, *args, warmup: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.warmup = warmup

    def draw(self, index):
        k, origin, offsets = super().draw(index)
        if self.epoch < self.warmup:
            offsets = offsets * (self.epoch + 1) / (self.warmup + 1)
        return k, origin, offsets


def main(warmup: int) -> None:
    torch.manual_seed(0)
    model = build_model(TrainConfig(model="homography-unsup", dataset="homography"))
    _, val, _ = homography_splits(0, 0, 2048, 256, 1000)
    train = Curriculum("train", 2048, seed=0, fresh=True, warmup=warmup)
    vx, vy = (torch.stack(t) for t in zip(*(val[i] for i in range(len(val)))))
    decay = [p for p in model.parameters() if p.ndim > 1]
    rest = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 1e-4}, {"params": rest, "weight_decay": 0.0}], lr=1e-3)
    epochs = 8
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    print(f"warmup {warmup}; identity on validation: {float(mean_corner_error(torch.zeros_like(vy), vy)):.2f} px")
    for epoch in range(epochs):
        t0 = time.time()
        train.set_epoch(epoch)
        g = torch.Generator().manual_seed(1000 + epoch)
        order = torch.randperm(len(train), generator=g)
        model.train()
        losses, errs = [], []
        for i in range(0, len(order), 32):
            x, y = (torch.stack(t) for t in zip(*(train[int(j)] for j in order[i : i + 32])))
            loss, err, _ = photometric_loss(model(x), x, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            errs.append(float(err))
        sched.step()
        model.eval()
        with torch.no_grad():
            val_err = float(
                np.mean(
                    [float(mean_corner_error(model(vx[i : i + 64]), vy[i : i + 64])) for i in range(0, len(vx), 64)]
                )
            )
        largest = RHO * min(1.0, (epoch + 1) / (warmup + 1)) if epoch < warmup else RHO
        print(
            f"epoch {epoch}: train offsets up to {largest:.0f} px, train loss {np.mean(losses):.4f}, "
            f"train corner error {np.mean(errs):.2f} px, validation {val_err:.2f} px ({time.time() - t0:.0f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main(int(sys.argv[1]))
