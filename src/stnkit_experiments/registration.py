"""``stnkit reproduce registration``: the registration benchmark on held-out ``shapes2d`` / ``shapes3d`` pairs.

Every method registers the same held-out test pairs (:func:`stnkit.train.evaluate.load_test_set`: the
dataset's test seed, never a training draw) and is measured the same way
(:func:`stnkit.train.evaluate.registration_metrics`: mean Dice of the foreground labels before and after,
% of folded voxels, mean end-point error in voxels against the true field over the fixed foreground), with
its wall-clock seconds per pair on this machine:

* ``none``: the zero field; ``true-affine``: the true affine part alone (an oracle: what an exact affine
  registration reaches, the non-linear part left);
* ``fieldnet`` and ``fieldnet-dice``: ``stnkit train --model fieldnet`` on the dataset's training pairs
  (unsupervised; then with the labels as an auxiliary Dice loss), one forward pass per pair;
* ``sitk-affine``: SimpleITK's affine registration (mean squares, three-level pyramid);
* ``ants-syn``: ANTs SyN through antspyx with its defaults (``type_of_transform="SyN"``: an affine stage,
  then SyN, Mattes mutual information for both, SyN iterations 40, 20, 0 over three levels: no step at
  full resolution); where antspyx is missing, ``dipy-syn`` (dipy's SyN, CC metric) instead.

Each peer's transform is turned into a field in stnkit's convention (voxel displacements at the fixed
grid, converted by :func:`stnkit.geometry.field_from_pixels`), and checked: moving warped by that field
with :func:`stnkit.geometry.warp_field` must match the peer's own resampled image (``conversion_check``, the
mean absolute difference, is recorded per pair).

Resumable like ``table1``: each method's records are kept in ``OUT/runs/METHOD.json`` once it finishes all
pairs (never run again), the fieldnet runs in ``OUT/runs/fieldnet*/`` (resumed from ``last.ckpt``);
``registration.json`` and ``registration.md`` are rewritten after each method, and ``--report-only``
rewrites them (and the figure) from what is on disk.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from stnkit._io import atomic_write_text
from stnkit.data import dataset_info
from stnkit.geometry import field_from_pixels, warp_field
from stnkit.train.config import TrainConfig
from stnkit.train.evaluate import load_test_set, registration_metrics
from stnkit.train.report import markdown_table

from .table1 import machine_info, write_summary

DATASET = "shapes2d"
# 64x64 pairs, not shapes2d's default 128x128: fieldnet's training must fit about 15 minutes of 2 CPU cores
# shared with other work (a 128x128 step costs about four times a 64x64 one)
SIZE = 64
TEST_PAIRS = 16
# what every fieldnet row trains with, on top of fieldnet's recipe: 128 fresh pairs a epoch, 12 epochs
FIELDNET_BASE = {"volume_size": SIZE, "train_size": 128, "epochs": 12}
FIGURE_PAIR = 0
# the fieldnet runs (stnkit train): each row's options on top of fieldnet's recipe
FIELDNET_ROWS = {
    "fieldnet": {},
    "fieldnet-dice": {"dice_weight": 1.0},
    # the unsupervised row trained longer, its learning rate cosine-decayed
    "fieldnet-long": {"epochs": 30, "schedule": "cosine"},
}
METHODS = ("none", "true-affine", "sitk-affine", "ants-syn", "fieldnet", "fieldnet-dice", "fieldnet-long")
LABELS = {
    "none": "no registration",
    "true-affine": "true affine only (oracle)",
    "sitk-affine": "SimpleITK affine",
    "ants-syn": "ANTs SyN (antspyx)",
    "dipy-syn": "dipy SyN",
    "fieldnet": "fieldnet (stnkit, unsupervised)",
    "fieldnet-dice": "fieldnet (stnkit, + Dice on labels)",
    "fieldnet-long": "fieldnet (stnkit, unsupervised, 30 epochs, cosine)",
}
THREADS = 2


def _field_from_voxels(d: np.ndarray, order: str) -> torch.Tensor:
    """A peer's displacement ``(*spatial, dims)`` in voxels to stnkit's field ``(dims, *spatial)``."""
    t = torch.from_numpy(np.ascontiguousarray(np.moveaxis(d, -1, 0))).float()[None]
    return field_from_pixels(t, order=order)[0]


def _check(pair: dict, u: torch.Tensor, theirs: np.ndarray) -> float:
    """Mean |moving warped by u (stnkit) - the peer's own warped moving|."""
    ours = warp_field(pair["moving"][None], u[None])[0, 0].numpy()
    return float(np.abs(ours - theirs).mean())


def sitk_affine(pair: dict) -> tuple[torch.Tensor, float]:
    import SimpleITK as sitk

    sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(THREADS)
    fixed = sitk.GetImageFromArray(pair["fixed"][0].numpy().astype(np.float64))
    moving = sitk.GetImageFromArray(pair["moving"][0].numpy().astype(np.float64))
    dims = pair["moving"].ndim - 1
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMeanSquares()
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=1e-4, numberOfIterations=200)
    reg.SetOptimizerScalesFromPhysicalShift()
    init = sitk.CenteredTransformInitializer(
        fixed, moving, sitk.AffineTransform(dims), sitk.CenteredTransformInitializerFilter.GEOMETRY
    )
    reg.SetInitialTransform(init, inPlace=False)
    reg.SetShrinkFactorsPerLevel([4, 2, 1])
    reg.SetSmoothingSigmasPerLevel([2, 1, 0])
    reg.SetInterpolator(sitk.sitkLinear)
    tx = reg.Execute(fixed, moving)
    disp = sitk.TransformToDisplacementField(
        tx, sitk.sitkVectorFloat64, fixed.GetSize(), fixed.GetOrigin(), fixed.GetSpacing(), fixed.GetDirection()
    )
    # SimpleITK's vectors are physical (x, y[, z]) = stnkit's channel order; unit spacing: voxels
    u = _field_from_voxels(sitk.GetArrayFromImage(disp), "xyz")
    theirs = sitk.GetArrayFromImage(sitk.Resample(moving, fixed, tx, sitk.sitkLinear, 0.0))
    return u, _check(pair, u, theirs)


def ants_syn(pair: dict) -> tuple[torch.Tensor, float]:
    import ants

    fixed = ants.from_numpy(pair["fixed"][0].numpy().astype(np.float32))
    moving = ants.from_numpy(pair["moving"][0].numpy().astype(np.float32))
    reg = ants.registration(fixed, moving, type_of_transform="SyN")
    with tempfile.TemporaryDirectory() as tmp:
        path = ants.apply_transforms(fixed, moving, reg["fwdtransforms"], compose=os.path.join(tmp, "pair"))
        d = ants.image_read(path).numpy()
    # antspyx reads the numpy array's axes as its (x, y[, z]): its vectors run along the tensor axes
    u = _field_from_voxels(d, "dhw")
    return u, _check(pair, u, reg["warpedmovout"].numpy())


def dipy_syn(pair: dict) -> tuple[torch.Tensor, float]:
    from dipy.align.imwarp import SymmetricDiffeomorphicRegistration
    from dipy.align.metrics import CCMetric

    dims = pair["moving"].ndim - 1
    static, moving = pair["fixed"][0].numpy().astype(np.float64), pair["moving"][0].numpy().astype(np.float64)
    sdr = SymmetricDiffeomorphicRegistration(CCMetric(dims), [100, 50, 25])
    mapping = sdr.optimize(static, moving)
    u = _field_from_voxels(np.asarray(mapping.get_forward_field()), "dhw")
    return u, _check(pair, u, mapping.transform(moving))


def peer_syn() -> str:
    """``ants-syn`` where antspyx imports, else ``dipy-syn`` (or ``None`` with neither)."""
    for module, name in (("ants", "ants-syn"), ("dipy", "dipy-syn")):
        try:
            __import__(module)
            return name
        except ImportError:
            continue
    return None


def _metrics(pair: dict, u: torch.Tensor, num_classes: int) -> dict:
    m = registration_metrics(
        u[None], pair["moving_labels"][None], pair["fixed_labels"][None], num_classes, pair["field"][None]
    )
    return {k: round(float(v[0]), 5) for k, v in m.items()}


def fieldnet_config(row: str, options: dict | None = None) -> TrainConfig:
    """The training options of a fieldnet row: fieldnet's recipe on :data:`DATASET`, the command line's
    ``options``, then the row's own."""
    return TrainConfig.for_model(
        "fieldnet", None, dataset=DATASET, **{**FIELDNET_BASE, **(options or {}), **FIELDNET_ROWS[row]}
    )


def train_fieldnet(out: Path, row: str, options: dict | None, quiet: bool = True):
    """The trained model of ``row`` (trained now, or resumed, unless its run has finished)."""
    from stnkit.train.checkpoint import load_model
    from stnkit.train.run import train

    run = out / "runs" / row
    if not (run / "results.json").is_file():
        resume = (run / "checkpoints" / "last.ckpt").is_file()
        train(fieldnet_config(row, options), run, resume=resume, overwrite=not resume and run.exists(), quiet=quiet)
    model, _ = load_model(run / "model.safetensors")
    return model.eval()


def run_method(out: Path, method: str, pairs, num_classes: int, options: dict | None = None) -> dict:
    """Register every pair with ``method``; its record (kept in ``OUT/runs/METHOD.json``)."""
    model = train_fieldnet(out, method, options) if method in FIELDNET_ROWS else None
    records = []
    first_field = None
    if model is not None:  # one forward pass before the clock (the first call allocates)
        with torch.no_grad():
            model(torch.cat([pairs.pair(0)["moving"], pairs.pair(0)["fixed"]])[None])
    for i in range(len(pairs)):
        pair = pairs.pair(i)
        check = None
        start = time.perf_counter()
        if method == "none":
            u = torch.zeros_like(pair["field"])
        elif method == "true-affine":
            from stnkit.geometry import get_transform, grid_to_field

            family = get_transform("affine", dims=pairs.dims)
            u = grid_to_field(family.grid(pair["affine"][None], pairs.spatial))[0]
        elif method == "sitk-affine":
            u, check = sitk_affine(pair)
        elif method == "ants-syn":
            u, check = ants_syn(pair)
        elif method == "dipy-syn":
            u, check = dipy_syn(pair)
        elif model is not None:
            with torch.no_grad():
                u = model(torch.cat([pair["moving"], pair["fixed"]])[None])[0]
        else:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        seconds = time.perf_counter() - start
        rec = {"pair": i, **_metrics(pair, u, num_classes), "seconds": round(seconds, 4)}
        if check is not None:
            rec["conversion_check"] = round(check, 6)
        records.append(rec)
        if i == FIGURE_PAIR:
            first_field = u
    (out / "runs").mkdir(parents=True, exist_ok=True)
    torch.save(first_field, out / "runs" / f"{method}.pair{FIGURE_PAIR}.pt")
    record = {"method": method, "pairs": records}
    if method in FIELDNET_ROWS:
        results = json.loads((out / "runs" / method / "results.json").read_text())
        record["fit_seconds"] = results["fit_seconds"]
        record["config"] = results["config"]
    atomic_write_text(out / "runs" / f"{method}.json", json.dumps(record, indent=2) + "\n")
    return record


def _mean_std(xs: list[float]) -> tuple[float, float]:
    a = np.asarray(xs, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def summarize(out: Path, methods: list[str], wall_seconds: float | None = None) -> dict:
    table = {}
    for method in methods:
        path = out / "runs" / f"{method}.json"
        if not path.is_file():
            continue
        rec = json.loads(path.read_text())
        pairs = rec["pairs"]
        row = {"n": len(pairs)}
        for key in ("dice_before", "dice", "folding", "epe", "seconds"):
            m, s = _mean_std([p[key] for p in pairs])
            row[key] = {"mean": round(m, 4), "std": round(s, 4)}
        checks = [p["conversion_check"] for p in pairs if "conversion_check" in p]
        if checks:
            row["conversion_check_max"] = max(checks)
        if "fit_seconds" in rec:
            row["fit_seconds"] = rec["fit_seconds"]
        table[method] = row
    return {
        "description": "registration benchmark on held-out synthetic pairs, by `stnkit reproduce registration`",
        "dataset": DATASET,
        "size": SIZE,
        "test_pairs": TEST_PAIRS,
        "threads": THREADS,
        "methods": methods,
        "machine": machine_info(),
        "torch": torch.__version__,
        "wall_seconds": wall_seconds,
        "table": table,
    }


def render_markdown(summary: dict) -> str:
    rows = []
    for method in summary["methods"]:
        r = summary["table"].get(method)
        if r is None:
            rows.append([LABELS[method], "not run yet", "", "", "", ""])
            continue
        rows.append(
            [
                LABELS[method],
                f"{r['dice']['mean']:.3f} ± {r['dice']['std']:.3f}",
                f"{r['folding']['mean']:.3f}",
                f"{r['epe']['mean']:.2f}",
                f"{r['seconds']['mean']:.3f}",
                str(r["n"]),
            ]
        )
    before = next(iter(summary["table"].values()), None)
    lines = markdown_table(["method", "Dice after", "folded %", "end-point error (voxels)", "s / pair", "pairs"], rows)
    info = dataset_info(summary["dataset"])
    size = "x".join([str(summary.get("size", info.canvas_size))] * info.dims)
    lines += [
        "",
        f"Held-out `{summary['dataset']}` test pairs ({size}, test seed 0, never a training draw); Dice: mean over "
        "the four foreground labels, ± the std over pairs"
        + (f"; Dice before registration {before['dice_before']['mean']:.3f}" if before else "")
        + ". End-point error: mean over the fixed image's foreground, against the true field. "
        f"Seconds per pair: wall clock on {summary['machine']['cpus']} CPU cores, {summary['threads']} threads "
        "per method, beside other work (fieldnet: inference only; its training time is in registration.json, "
        "`fit_seconds`; the fits ran at different loads of the shared machine).",
    ]
    return "\n".join(lines) + "\n"


def _targets(summary: dict) -> list[str]:
    """The issue's targets, as far as the table measures them (``stnkit register`` rows when present)."""
    t = summary["table"]
    syn = next((m for m in ("ants-syn", "dipy-syn") if m in t), None)
    register = [m for m in t if m.startswith("register-")]
    lines = []
    if not register:
        lines.append(
            "- `stnkit register` against SyN, and fieldnet within 0.02 Dice of `stnkit register` at 100x less time: "
            "not measured (no `stnkit register` rows in this table)."
        )
    for m in register:
        if syn is None:
            continue
        r, s = t[m], t[syn]
        ok = r["dice"]["mean"] >= s["dice"]["mean"] and r["folding"]["mean"] <= s["folding"]["mean"]
        ok = ok and r["seconds"]["mean"] < s["seconds"]["mean"]
        lines.append(
            f"- {LABELS.get(m, m)} vs {LABELS[syn]}: Dice {r['dice']['mean']:.3f} vs {s['dice']['mean']:.3f}, "
            f"folded {r['folding']['mean']:.3f} vs {s['folding']['mean']:.3f} %, "
            f"{r['seconds']['mean']:.3f} vs {s['seconds']['mean']:.3f} s: {'reached' if ok else 'not reached'}."
        )
    for row in (m for m in FIELDNET_ROWS if m in t and syn is not None):
        f, s = t[row], t[syn]
        lines.append(
            f"- {LABELS[row]} beside {LABELS[syn]} (no `stnkit register` to compare with): Dice "
            f"{f['dice']['mean']:.3f} vs {s['dice']['mean']:.3f} ({f['dice']['mean'] - s['dice']['mean']:+.3f}), "
            f"{s['seconds']['mean'] / max(f['seconds']['mean'], 1e-9):.0f}x less time per pair."
        )
    return lines


def render_page(summary: dict, figure: str) -> str:
    """docs/results/registration.md: the command, the table (:func:`render_markdown`), the targets, the figure."""
    fit = {m: summary["table"][m].get("fit_seconds") for m in FIELDNET_ROWS if m in summary["table"]}
    lines = [
        "# Registration: fieldnet beside SimpleITK and ANTs on synthetic pairs",
        "",
        "```bash",
        "stnkit reproduce registration --out results/registration --update-readme --readme docs/results/registration.md",
        f"stnkit train --dataset {DATASET} --model fieldnet --volume-size {SIZE} --train-size "
        f"{FIELDNET_BASE['train_size']} --epochs {FIELDNET_BASE['epochs']}   # the fieldnet row alone",
        "```",
        "",
        f"Generated from `results/registration/registration.json` (`{summary['dataset']}`, "
        f"{summary['size']}x{summary['size']}, {summary['test_pairs']} held-out test pairs; the methods and the "
        "measures: `src/stnkit_experiments/registration.py`). Training time: "
        + ", ".join(f"{m} {s / 60:.1f} min" for m, s in fit.items() if s is not None)
        + f" ({FIELDNET_BASE['epochs']} epochs of {FIELDNET_BASE['train_size']} fresh pairs, batch 4, unless the "
        "row says otherwise) on the same shared CPU cores.",
        "",
        render_markdown(summary).rstrip(),
        "",
        "## Targets (issue 27)",
        "",
        *_targets(summary),
        "",
        f"![one test pair: each method's warped moving image, deformed grid and Jacobian determinant]({figure})",
        "",
    ]
    return "\n".join(lines)


def make_figure(out: Path, methods: list[str]) -> Path | None:
    from stnkit.train.show import registration_figure

    fields = {}
    for method in methods:
        path = out / "runs" / f"{method}.pair{FIGURE_PAIR}.pt"
        if path.is_file() and method != "none":
            fields[method] = torch.load(path, weights_only=True)  # short names: the panel titles are small
    if not fields:
        return None
    pairs = load_test_set(TrainConfig(dataset=DATASET, volume_size=SIZE), size=TEST_PAIRS)
    path = out / "figures" / "registration_pair.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    registration_figure(pairs.pair(FIGURE_PAIR), fields, path, f"{DATASET} test pair {FIGURE_PAIR}")
    return path


def run_registration(out: Path, methods: list[str], options: dict | None = None, report_only: bool = False) -> dict:
    """Run every method of ``methods`` not yet done (unless ``report_only``); the summary."""
    torch.set_num_threads(THREADS)
    os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", str(THREADS))
    # ANTs samples its metric at random: unseeded, two runs of the same pairs differed (mean Dice 0.833 and 0.845,
    # runs/ants-syn.unseeded-run*.json); seeded, two runs at 2 threads agreed on 14 of 16 pairs (0.844, 0.845:
    # runs/ants-syn.seeded-run1.json and runs/ants-syn.json)
    os.environ.setdefault("ANTS_RANDOM_SEED", "1")
    previous = out / "registration.json"
    wall = (json.loads(previous.read_text()).get("wall_seconds") or 0.0) if previous.is_file() else 0.0
    pairs = load_test_set(TrainConfig(dataset=DATASET, volume_size=SIZE), size=TEST_PAIRS)
    num_classes = dataset_info(DATASET).num_classes
    start = time.perf_counter()
    for method in methods:
        if report_only or (out / "runs" / f"{method}.json").is_file():
            continue
        print(f"registration: {method} on {TEST_PAIRS} {DATASET} test pairs", flush=True)
        run_method(out, method, pairs, num_classes, options)
        summary = summarize(out, methods, round(wall + time.perf_counter() - start, 1))
        write_summary(out, "registration", summary, render_markdown(summary))
    summary = summarize(out, methods, round(wall + time.perf_counter() - start, 1))
    write_summary(out, "registration", summary, render_markdown(summary))
    make_figure(out, methods)
    return summary


def default_methods() -> list[str]:
    """:data:`METHODS`, with dipy's SyN in place of ANTs' where antspyx is missing (none without either)."""
    syn = peer_syn()
    return [m for m in (syn if m == "ants-syn" else m for m in METHODS) if m is not None]
