"""Is stnkit register's affine error on the MRI (`stnkit reproduce mri`) the optimiser's or the objective's?

For each affine seed: local NCC (register's loss) of FIXED and MOVING warped by the true transform and by
register's estimate, at each pyramid size, over every point and over the overlap only (overlap_only). Lower is
better. Output: similarity_at_truth.txt beside this file
(`OMP_NUM_THREADS=1 python docs/experiments/registration/mri/similarity_at_truth.py`).
"""
import sys, torch, numpy as np
torch.set_num_threads(1)
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[4] / "src"))
from stnkit_experiments import realmri as R
from stnkit.data.volumes import read_volume
from stnkit.registration import register, voxel_centres_world
from stnkit.registration import core as C
from stnkit.registration.frames import fixed_to_moving_theta
fixed = read_volume(R.mri_path())
for seed in range(3):
    centre = voxel_centres_world(fixed.affine, fixed.spatial).reshape(-1, 3).mean(0)
    truth = R.known_transform("affine", seed, centre); moving = R.moved_volume(fixed, truth)
    res = register(fixed, moving, "affine")
    f, m = C._rescale(C._grey(fixed)), C._rescale(C._grey(moving))
    for lev in (1, 2, 3):
        sizes = C._pyramid_sizes(fixed.spatial, lev); fl = C._down(f, sizes[0]); ml = C._down(m, C._pyramid_sizes(moving.spatial, lev)[0])
        out = []
        for M in (truth, res.matrix):
            th = fixed_to_moving_theta(torch.as_tensor(M, dtype=torch.float64), fixed.affine, fixed.spatial, moving.affine, moving.spatial)[None].float()
            size = tuple(fl.shape[2:])
            for ov in (False, True):
                mask = C._inside(C._field_grid(th[0], torch.zeros(1, 3, *size)), tuple(ml.shape[2:])) if ov else None
                out.append(float(C._similarity("ncc", C.warp(ml, th, "affine", out_size=size), fl, None, mask)))
        print(seed, "level size", sizes[0], "truth (all, overlap) %.4f %.4f  estimate %.4f %.4f" % tuple(out))
