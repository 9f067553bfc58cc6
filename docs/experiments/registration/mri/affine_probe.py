"""stnkit register's affine on nibabel's MRI: settings tried on VALIDATION moves (seeds 100-104; the test
moves of `stnkit reproduce mri` are seeds 0-2), mean TRE (mm) over the seeds. One thread.
Run from the repository root: .venv/bin/python docs/experiments/registration/mri/affine_probe.py"""

import time

import numpy as np
import torch

from stnkit.data.volumes import read_volume
from stnkit.registration import register, voxel_centres_world
from stnkit_experiments.realmri import brain_points, known_transform, moved_volume, mri_path

torch.set_num_threads(1)
fixed = read_volume(mri_path())
centre = voxel_centres_world(fixed.affine, fixed.spatial).reshape(-1, 3).mean(0)
pts = brain_points(fixed)
SEEDS = range(100, 105)
pairs = []
for s in SEEDS:
    truth = known_transform("affine", s, centre)
    pairs.append((truth, moved_volume(fixed, truth)))
TRIALS = {
    "defaults (ncc, 3 levels, 100 steps)": {},
    "overlap_only": {"overlap_only": True},
    "loss mse": {"loss": "mse"},
    "loss mi": {"loss": "mi"},
    "steps 300": {"steps": 300},
    "levels 2": {"levels": 2},
    "levels 1": {"levels": 1},
    "loss mse, overlap_only": {"loss": "mse", "overlap_only": True},
    "loss mi, overlap_only": {"loss": "mi", "overlap_only": True},
}
for name, kw in TRIALS.items():
    tre, secs = [], []
    for truth, moving in pairs:
        c = time.process_time()
        res = register(fixed, moving, "affine", **kw)
        secs.append(time.process_time() - c)
        est = pts @ res.matrix[:3, :3].T + res.matrix[:3, 3]
        tre.append(np.linalg.norm(est - (pts @ truth[:3, :3].T + truth[:3, 3]), axis=1).mean())
    print(
        f"{name}: TRE mean {np.mean(tre):.3f} mm (per seed {', '.join(f'{t:.2f}' for t in tre)}); CPU s {np.mean(secs):.2f}",
        flush=True,
    )

# why: the similarity at the true transform against at the estimate (full resolution, the defaults' ncc)
import stnkit.registration.core as core  # noqa: E402
from stnkit.geometry import warp  # noqa: E402
from stnkit.registration import fixed_to_moving_theta  # noqa: E402

f = core._rescale(core._grey(fixed))
for s, (truth, moving) in zip(SEEDS, pairs, strict=True):
    res = register(fixed, moving, "affine")
    m = core._rescale(core._grey(moving))
    vals = []
    for matrix in (truth, res.matrix):
        th = fixed_to_moving_theta(torch.as_tensor(matrix), fixed.affine, fixed.spatial, moving.affine, moving.spatial)
        vals.append(
            float(core._similarity("ncc", warp(m, th[None].float(), "affine", out_size=fixed.spatial), f, None))
        )
    print(f"seed {s}: ncc loss at the truth {vals[0]:.4f}, at the estimate {vals[1]:.4f} (lower is better)", flush=True)

# and with the head whole: the same moves of the MRI padded by 6 zero voxels on every side, so that no move
# takes the head out of the field of view
from stnkit.data.volumes import Volume  # noqa: E402

p = 6
affine = fixed.affine.copy()
affine[:3, 3] -= affine[:3, :3] @ np.array([p, p, p])
padded = Volume(torch.nn.functional.pad(fixed.data, (p,) * 6), affine, "nifti", header=fixed.header)
centre_p = voxel_centres_world(padded.affine, padded.spatial).reshape(-1, 3).mean(0)
for kind in ("rigid", "affine"):
    tre = []
    for s in SEEDS:
        truth = known_transform(kind, s, centre_p)
        res = register(padded, moved_volume(padded, truth), kind)
        est = pts @ res.matrix[:3, :3].T + res.matrix[:3, 3]
        tre.append(np.linalg.norm(est - (pts @ truth[:3, :3].T + truth[:3, 3]), axis=1).mean())
    print(f"padded, {kind}, defaults: TRE mean {np.mean(tre):.3f} mm (per seed {', '.join(f'{t:.2f}' for t in tre)})")
