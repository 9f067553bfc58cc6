"""stnkit register on nibabel's MRI with the local NCC's window statistics taken over the overlap only (a monkey-patched
trial of ncc_loss, NOT in the library), overlap_only=True, on the 5 validation moves (seeds 100-104), mean TRE (mm).
Run from the repository root: .venv/bin/python docs/experiments/registration/mri/masked_window_ncc.py"""

import numpy as np
import torch

import stnkit.nn.similarity as sim
import stnkit.registration.core as core
import stnkit_experiments.realmri as rm
from stnkit.data.volumes import read_volume
from stnkit.registration import register, voxel_centres_world

torch.set_num_threads(1)
orig = sim.ncc_loss


def wncc(a, b, window=9, eps=1e-5, mask=None):
    if mask is None:
        return orig(a, b, window, eps)
    a, b = sim._pair(a, b)
    w = sim._mask(mask, a)
    wa, wb = w * a, w * b
    mw, ma, mb, maa, mbb, mab = sim._box_mean(torch.cat([w, wa, wb, wa * a, wb * b, wa * b], 1), window).split(
        [1, a.shape[1], a.shape[1], a.shape[1], a.shape[1], a.shape[1]], 1
    )
    mw = mw.clamp_min(1e-6)
    ma, mb, maa, mbb, mab = ma / mw, mb / mw, maa / mw, mbb / mw, mab / mw
    cov = mab - ma * mb
    va = (maa - ma * ma).clamp_min(0)
    vb = (mbb - mb * mb).clamp_min(0)
    cc = cov * cov / (va * vb + eps)
    return -sim._masked_mean(cc, w)


fixed = read_volume(rm.mri_path())
centre = voxel_centres_world(fixed.affine, fixed.spatial).reshape(-1, 3).mean(0)
pts = rm.brain_points(fixed)
for name, fn in (("window stats over the mask", wncc),):
    core.ncc_loss = fn
    for kind in ("rigid", "affine"):
        tre = []
        for s in range(100, 105):
            truth = rm.known_transform(kind, s, centre)
            mov = rm.moved_volume(fixed, truth)
            res = register(fixed, mov, kind, overlap_only=True)
            est = pts @ res.matrix[:3, :3].T + res.matrix[:3, 3]
            tre.append(np.linalg.norm(est - (pts @ truth[:3, :3].T + truth[:3, 3]), axis=1).mean())
        print(name, kind, f"TRE {np.mean(tre):.3f}", np.round(tre, 3), flush=True)
