"""``stnkit reproduce mri``: a real MRI moved by known rigid and affine transforms, recovered by
``stnkit register`` and by SimpleITK, scored by target registration error (TRE) in millimetres.

The volume is the small anatomical MRI that ships with nibabel's tests (``anatomical.nii``: 33x41x25 voxels
of 2 mm, an x-flipped affine). For each seed a known world transform ``T`` (fixed -> moving, as ITK's) is
drawn: ``rigid``, a rotation of 2 to 5 degrees about a random axis through the volume's centre and a
translation of up to 4 mm per axis; ``affine``, that and scales in [0.95, 1.05] and shears up to 0.03. The
moving volume is the MRI resampled on its own grid at ``T^-1`` by ``scipy.ndimage.map_coordinates`` (cubic
B-spline: another interpolator than either method's linear one), so a point ``w`` of the fixed volume is
found at ``T w`` in the moving one.

Both methods start from the identity and get the same pair:

- ``stnkit``: :func:`stnkit.registration.register`, the command line's defaults (local NCC, 3 levels,
  L-BFGS, 100 iterations per level), ``rigid`` or ``affine``; ``stnkit-overlap``: the same with
  ``overlap_only=True`` (``--overlap-only``: the similarity only where the fixed points read inside MOVING,
  as ITK's metrics count them).
- ``SimpleITK``: ``ImageRegistrationMethod``, ``Euler3DTransform`` or ``AffineTransform`` centred on the
  volume's centre, Mattes mutual information (32 bins, all voxels), regular-step gradient descent with
  physical-shift parameter scales, shrink factors 4, 2, 1 and smoothing 2, 1, 0 voxels.

TRE: ``|T_est(w) - T(w)|`` in mm at the world points ``w`` of the head voxels of the fixed volume
(intensity above a fifth of its 99th percentile: most of the volume, a crop of the head), mean and max per pair; seconds per pair (wall clock).
Each pair's result is stored as it finishes (``OUT/registration-mri/``): a rerun continues.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from stnkit._io import atomic_write_text, save_figure
from stnkit.data.volumes import Volume, read_volume
from stnkit.registration import LPS, register, voxel_centres_world

KINDS = ("rigid", "affine")
METHODS = ("stnkit", "stnkit-overlap", "SimpleITK")


def mri_path() -> Path:
    import nibabel

    path = Path(nibabel.__file__).parent / "tests" / "data" / "anatomical.nii"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: nibabel's test MRI is not installed with this nibabel")
    return path


def known_transform(kind: str, seed: int, centre: np.ndarray) -> np.ndarray:
    """The 4x4 world transform (RAS, fixed -> moving) of ``kind`` drawn for ``seed``."""
    rng = np.random.default_rng(1000 + seed)
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = math.radians(rng.uniform(2.0, 5.0))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    lin = np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k
    if kind == "affine":
        scale = np.diag(rng.uniform(0.95, 1.05, 3))
        shear = np.eye(3) + np.triu(rng.uniform(-0.03, 0.03, (3, 3)), 1)
        lin = lin @ scale @ shear
    t = rng.uniform(-4.0, 4.0, 3)
    m = np.eye(4)
    m[:3, :3] = lin
    m[:3, 3] = centre + t - lin @ centre
    return m


def moved_volume(fixed: Volume, truth: np.ndarray) -> Volume:
    """The fixed volume resampled on its own grid at ``truth^-1``: the moving volume of the pair."""
    from scipy import ndimage

    world = voxel_centres_world(fixed.affine, fixed.spatial)  # (D, H, W, 3)
    src = world @ np.linalg.inv(truth)[:3, :3].T + np.linalg.inv(truth)[:3, 3]
    vox = src @ np.linalg.inv(fixed.affine)[:3, :3].T + np.linalg.inv(fixed.affine)[:3, 3]  # (x, y, z)
    coords = [vox[..., 2], vox[..., 1], vox[..., 0]]  # the array's (D, H, W) axes
    data = ndimage.map_coordinates(fixed.data[0].double().numpy(), coords, order=3, mode="constant", cval=0.0)
    return Volume(torch.from_numpy(data.astype(np.float32))[None], fixed.affine.copy(), "nifti", header=fixed.header)


def brain_points(fixed: Volume) -> np.ndarray:
    data = fixed.data[0].numpy()
    mask = data > 0.2 * np.percentile(data, 99)
    return voxel_centres_world(fixed.affine, fixed.spatial)[mask]


def _to_sitk(vol: Volume):
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(vol.data[0].numpy().astype(np.float32))  # (D, H, W): ITK index (x, y, z)
    lin = LPS[:3, :3] @ vol.affine[:3, :3]
    spacing = np.linalg.norm(lin, axis=0)
    img.SetSpacing(tuple(float(s) for s in spacing))
    img.SetDirection(tuple(float(v) for v in (lin / spacing).ravel()))
    img.SetOrigin(tuple(float(v) for v in LPS[:3, :3] @ vol.affine[:3, 3]))
    return img


def simpleitk_register(fixed: Volume, moving: Volume, kind: str, seed: int):
    """SimpleITK's registration of the pair; returns a function mapping RAS points (N, 3) fixed -> moving."""
    import SimpleITK as sitk

    f, m = _to_sitk(fixed), _to_sitk(moving)
    base = sitk.Euler3DTransform() if kind == "rigid" else sitk.AffineTransform(3)
    init = sitk.CenteredTransformInitializer(f, m, base, sitk.CenteredTransformInitializerFilter.GEOMETRY)
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    reg.SetMetricSamplingStrategy(reg.NONE)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0, minStep=1e-4, numberOfIterations=300, gradientMagnitudeTolerance=1e-8
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([4, 2, 1])
    reg.SetSmoothingSigmasPerLevel([2, 1, 0])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    reg.SetInitialTransform(init, inPlace=False)
    tx = reg.Execute(sitk.Cast(f, sitk.sitkFloat32), sitk.Cast(m, sitk.sitkFloat32))

    def apply(points: np.ndarray) -> np.ndarray:
        lps = points * np.array([-1.0, -1.0, 1.0])
        out = np.array([tx.TransformPoint(tuple(float(v) for v in p)) for p in lps])
        return out * np.array([-1.0, -1.0, 1.0])

    return apply


def run_pair(fixed: Volume, kind: str, seed: int, method: str) -> dict:
    centre = voxel_centres_world(fixed.affine, fixed.spatial).reshape(-1, 3).mean(0)
    truth = known_transform(kind, seed, centre)
    moving = moved_volume(fixed, truth)
    pts = brain_points(fixed)
    t0, c0 = time.perf_counter(), time.process_time()
    if method.startswith("stnkit"):
        res = register(fixed, moving, kind, overlap_only=method == "stnkit-overlap")
        est = pts @ res.matrix[:3, :3].T + res.matrix[:3, 3]
    else:
        apply = simpleitk_register(fixed, moving, kind, seed)
        est = apply(pts)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    err = np.linalg.norm(est - (pts @ truth[:3, :3].T + truth[:3, 3]), axis=1)
    start = np.linalg.norm(pts - (pts @ truth[:3, :3].T + truth[:3, 3]), axis=1)
    return {
        "kind": kind,
        "seed": seed,
        "method": method,
        "tre_mean_mm": float(err.mean()),
        "tre_max_mm": float(err.max()),
        "initial_tre_mean_mm": float(start.mean()),
        "seconds": seconds,
        "cpu_seconds": cpu,
        "points": int(len(pts)),
        "truth": truth.tolist(),
    }


def run_mri(out: Path, seeds: int, quiet: bool = False) -> dict:
    fixed = read_volume(mri_path())
    pair_dir = out / "registration-mri"
    pair_dir.mkdir(parents=True, exist_ok=True)
    # one thread each (torch, ITK), as the registration benchmark: on a shared 2-core machine two threads
    # beside other work cost stnkit's small steps 20 times their time (45 s a pair instead of 2)
    torch.set_num_threads(1)
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    rows = []
    t0 = time.perf_counter()
    for kind in KINDS:
        for seed in range(seeds):
            for method in METHODS:
                path = pair_dir / f"{kind}-{seed}-{method}.json"
                if path.is_file():
                    row = json.loads(path.read_text())
                else:
                    row = run_pair(fixed, kind, seed, method)
                    atomic_write_text(path, json.dumps(row, indent=2) + "\n")
                rows.append(row)
                if not quiet:
                    print(
                        f"{kind} seed {seed} {method}: TRE {row['tre_mean_mm']:.3f} mm mean, "
                        f"{row['tre_max_mm']:.3f} max (from {row['initial_tre_mean_mm']:.2f}), {row['seconds']:.1f} s",
                        flush=True,
                    )
    summary = {
        "volume": {"file": "nibabel/tests/data/anatomical.nii", "grid": fixed.describe()},
        "voxel_mm": float(min(fixed.spacing)),
        "points": int(len(brain_points(fixed))),
        "voxels": int(np.prod(fixed.spatial)),
        "seeds": seeds,
        "rows": rows,
        "table": _table(rows),
        "wall_seconds": time.perf_counter() - t0,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
        f"ITK threads {sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()}",
    }
    atomic_write_text(out / "registration-mri.json", json.dumps(summary, indent=2) + "\n")
    make_figure(out, fixed)
    atomic_write_text(out / "registration-mri.md", render_markdown(summary))
    return summary


def _table(rows: list[dict]) -> list[dict]:
    out = []
    for kind in KINDS:
        for method in METHODS:
            sel = [r for r in rows if r["kind"] == kind and r["method"] == method]
            if not sel:
                continue
            out.append(
                {
                    "kind": kind,
                    "method": method,
                    "pairs": len(sel),
                    "tre_mean_mm": float(np.mean([r["tre_mean_mm"] for r in sel])),
                    "tre_mean_worst_mm": float(np.max([r["tre_mean_mm"] for r in sel])),
                    "tre_max_mm": float(np.max([r["tre_max_mm"] for r in sel])),
                    "initial_tre_mean_mm": float(np.mean([r["initial_tre_mean_mm"] for r in sel])),
                    "seconds": float(np.mean([r["seconds"] for r in sel])),
                    "cpu_seconds": float(np.mean([r.get("cpu_seconds", float("nan")) for r in sel])),
                }
            )
    return out


def render_markdown(summary: dict) -> str:
    vox = summary["voxel_mm"]
    lines = [
        "# Registration: a real MRI moved by known transforms",
        "",
        "Generated by `stnkit reproduce mri --out docs/results` from `registration-mri.json` (beside this file);",
        "the method is in `src/stnkit_experiments/realmri.py`'s docstring.",
        "",
        f"Volume: nibabel's `anatomical.nii`, {summary['volume']['grid']}. {summary['seeds']} seeds per kind; "
        "TRE at the head voxels (intensity above a fifth of the 99th percentile), in mm.",
        "",
        "| moves | method | pairs | TRE before (mm) | TRE mean (mm) | worst pair's mean (mm) | TRE max (mm) | s / pair | CPU s / pair |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["table"]:
        lines.append(
            f"| {r['kind']} | {r['method']} | {r['pairs']} | {r['initial_tre_mean_mm']:.2f} | {r['tre_mean_mm']:.3f} | "
            f"{r['tre_mean_worst_mm']:.3f} | {r['tre_max_mm']:.3f} | {r['seconds']:.1f} | {r['cpu_seconds']:.1f} |"
        )
    rigid = [r for r in summary["table"] if r["kind"] == "rigid" and r["method"] == "stnkit"]
    if rigid:
        ok = rigid[0]["tre_max_mm"] < vox
        lines += [
            "",
            f"Target (issue 27): TRE below one voxel ({vox:g} mm) for the rigid moves: "
            f"{'met' if ok else 'not met'} by stnkit (largest TRE at any head voxel of any pair: "
            f"{rigid[0]['tre_max_mm']:.3f} mm).",
        ]
    lines += [
        "",
        f"Machine: {summary['machine']}, shared with other work (the seconds are wall clock; CPU seconds count "
        "every thread of the process); whole run "
        f"{summary['wall_seconds']:.0f} s.",
        "",
        "![fixed, moving and stnkit's warped slices, and the differences](figures/registration-mri.png)",
        "",
    ]
    return "\n".join(lines)


def make_figure(out: Path, fixed: Volume) -> Path:
    """Seed 0's affine pair: mid-slices of fixed, moving, stnkit's warped moving, and both differences."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centre = voxel_centres_world(fixed.affine, fixed.spatial).reshape(-1, 3).mean(0)
    truth = known_transform("affine", 0, centre)
    moving = moved_volume(fixed, truth)
    res = register(fixed, moving, "affine")
    f, m, w = (v[0].numpy() for v in (fixed.data, moving.data, res.warped))
    hi = float(np.percentile(f, 99.5))
    fig, axes = plt.subplots(3, 5, figsize=(11, 7))
    cols = [
        ("fixed", f),
        ("moving", m),
        ("stnkit warped", w),
        ("|fixed - moving|", np.abs(f - m)),
        ("|fixed - warped|", np.abs(f - w)),
    ]
    for c, (name, v) in enumerate(cols):
        d, h, wd = v.shape
        for r, sl in enumerate([v[d // 2], v[:, h // 2, :][::-1], v[:, :, wd // 2][::-1]]):
            ax = axes[r, c]
            ax.imshow(sl, cmap="gray", vmin=0, vmax=hi, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name, fontsize=10)
    fig.suptitle("anatomical.nii, affine move (seed 0): mid-slices along the three voxel axes", fontsize=11)
    fig.tight_layout()
    path = save_figure(fig, out / "figures" / "registration-mri.png", dpi=90)
    plt.close(fig)
    return path
