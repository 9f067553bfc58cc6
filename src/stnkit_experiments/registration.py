"""``stnkit reproduce registration``: the registration benchmark on held-out ``shapes2d`` / ``shapes3d`` pairs.

Every method registers the same held-out test pairs (:func:`stnkit.train.evaluate.load_test_set`: the
dataset's test seed, never a training draw) and is measured the same way (:func:`measure`, through
:func:`stnkit.train.evaluate.registration_metrics`: mean Dice of the foreground labels before and after,
% of folded voxels, mean end-point error in voxels against the true field over the fixed foreground), with
its wall-clock seconds per pair on this machine (each method registers pair 0 once before the clock
starts, so that imports and first allocations are not counted; the threads: :func:`run_threads`):

* ``none``: the zero field; ``true-affine``: the true affine part alone (an oracle: what an exact affine
  registration reaches, the non-linear part left);
* ``register-affine``, ``register-dense``, ``register-velocity``: :func:`stnkit.registration.register`
  (what ``stnkit register`` runs), its settings (loss, pyramid levels, steps, smoothness weight) chosen on
  the **validation** pairs by :func:`tune_register` (``load_test_set(split="val")``: the fixed draw of
  ``test_seed`` + 1,000 that fieldnet's training validates on, never a test pair), the search and the
  choice kept in ``OUT/runs/register-tuning.json``;
* ``fieldnet`` and ``fieldnet-dice``: ``stnkit train --model fieldnet`` on the dataset's training pairs
  (unsupervised; then with the labels as an auxiliary Dice loss), one forward pass per pair;
  ``fieldnet-long`` and ``fieldnet-120``: the unsupervised net trained 30 and 120 epochs (cosine schedule);
  on shapes3d the 120-epoch row alone trains for about half an hour on one core;
* ``sitk-affine``: SimpleITK's affine registration (mean squares, three-level pyramid);
* ``ants-syn``: ANTs SyN through antspyx with its defaults (``type_of_transform="SyN"``: an affine stage,
  then SyN, Mattes mutual information for both, SyN iterations 40, 20, 0 over three levels: no step at
  full resolution); where antspyx is missing, ``dipy-syn`` (dipy's SyN, CC metric) instead.

Each peer's transform is turned into a field in stnkit's convention (voxel displacements at the fixed
grid, converted by :func:`stnkit.geometry.field_from_pixels`), and checked: moving warped by that field
with :func:`stnkit.geometry.warp_field` must match the peer's own resampled image (``conversion_check``, the
mean absolute difference, is recorded per pair). ``stnkit register``'s whole map (its linear stage and its
field) is :attr:`~stnkit.registration.RegistrationResult.grid`, a field by
:func:`stnkit.geometry.grid_to_field`, checked the same way against its own ``warped``.

Resumable like ``table1``: each method's records are kept in ``OUT/runs/METHOD.json`` once it finishes all
pairs (never run again), the fieldnet runs in ``OUT/runs/fieldnet*/`` (resumed from ``last.ckpt``), every
trial of the settings search in ``OUT/runs/register-tuning.json`` as it finishes; ``registration.json`` and
``registration.md`` are rewritten after each method, and ``--report-only`` rewrites them (and the figure)
from what is on disk.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from stnkit._io import atomic_write_text
from stnkit.data import dataset_info
from stnkit.geometry import field_from_pixels, get_transform, grid_to_field, warp_field
from stnkit.registration import register
from stnkit.train.config import TrainConfig
from stnkit.train.evaluate import load_test_set, registration_metrics
from stnkit.train.report import markdown_table

from .table1 import machine_info, write_summary

DATASET = "shapes2d"
# 64x64 pairs, not shapes2d's default 128x128: fieldnet's training must fit about 15 minutes of 2 CPU cores
# shared with other work (a 128x128 step costs about four times a 64x64 one)
SIZE = 64
TEST_PAIRS = 16
# the validation pairs register's settings are chosen on (load_test_set's split "val")
VAL_PAIRS = 16
# shapes3d: 32^3 volumes (not its default 64^3) and fewer pairs, to fit about 20 minutes of CPU (the default
# rows without fieldnet-120, which adds about half an hour)
SIZES = {"shapes2d": SIZE, "shapes3d": 32}
PAIRS_3D = 6


@dataclass(frozen=True)
class Bench:
    """What one benchmark registers: the dataset, the side of its images, its test and validation pairs."""

    dataset: str
    size: int
    test_pairs: int
    val_pairs: int


def default_bench(dataset: str = DATASET, size: int | None = None) -> Bench:
    """The benchmark of ``dataset`` (:data:`DATASET`: 16 test pairs of 64x64; ``shapes3d``: 6 of 32^3)."""
    pairs = (TEST_PAIRS, VAL_PAIRS) if dataset == DATASET else (PAIRS_3D, PAIRS_3D)
    return Bench(dataset, SIZES.get(dataset, SIZE) if size is None else size, *pairs)


# what every fieldnet row trains with, on top of fieldnet's recipe: 128 fresh pairs a epoch, 12 epochs
FIELDNET_BASE = {"volume_size": SIZE, "train_size": 128, "epochs": 12}
FIGURE_PAIR = 0
# the fieldnet runs (stnkit train): each row's options on top of fieldnet's recipe
FIELDNET_ROWS = {
    "fieldnet": {},
    "fieldnet-dice": {"dice_weight": 1.0},
    # the unsupervised row trained longer, its learning rate cosine-decayed
    "fieldnet-long": {"epochs": 30, "schedule": "cosine"},
    # four times longer again: fieldnet-long's first run had its best validation loss at its last epoch
    "fieldnet-120": {"epochs": 120, "schedule": "cosine"},
}
# stnkit register's rows: the transform each registers with
REGISTER_ROWS = {"register-affine": "affine", "register-dense": "dense", "register-velocity": "velocity"}
# the search of register's settings on the validation pairs: from REGISTER_START, one knob at a time in this
# order, each knob's values tried with the others as chosen so far (the field knobs for dense and velocity only).
# Steps are given per pyramid level, coarsest first (register's ANTs-style schedules; 0 skips the level, the field
# still carried up), so the levels stay 3: a step at full resolution costs four (2-D) or eight (3-D) of the level
# below, and the fine levels are where the time goes. The start is a probe's on shapes3d's validation pairs
# (ncc, smooth 3.0, fine levels short); both benchmarks search the same knobs.
REGISTER_START = {"loss": "ncc", "levels": 3, "steps": [10, 10, 0], "smooth": 3.0, "field_steps": [20, 10, 3]}
REGISTER_SEARCH = (
    ("loss", ("ncc", "mse", "mi")),
    ("steps", ([10, 0, 0], [10, 10, 0], [25, 10, 0], [10, 10, 10])),
    ("smooth", (1.0, 3.0, 10.0)),
    ("field_steps", ([10, 10, 3], [20, 10, 3], [20, 10, 5], [50, 20, 5], [20, 10, 10], [20, 20, 20])),
)
FIELD_KNOBS = ("smooth", "field_steps")


METHODS = (
    "none",
    "true-affine",
    "sitk-affine",
    "ants-syn",
    *REGISTER_ROWS,
    "fieldnet",
    "fieldnet-dice",
    "fieldnet-long",
    "fieldnet-120",
)
LABELS = {
    "none": "no registration",
    "true-affine": "true affine only (oracle)",
    "sitk-affine": "SimpleITK affine",
    "ants-syn": "ANTs SyN (antspyx)",
    "dipy-syn": "dipy SyN",
    "register-affine": "stnkit register, affine",
    "register-dense": "stnkit register, dense",
    "register-velocity": "stnkit register, velocity",
    "fieldnet": "fieldnet (stnkit, unsupervised)",
    "fieldnet-dice": "fieldnet (stnkit, + Dice on labels)",
    "fieldnet-long": "fieldnet (stnkit, unsupervised, 30 epochs, cosine)",
    "fieldnet-120": "fieldnet (stnkit, unsupervised, 120 epochs, cosine)",
}
THREADS = 2


def run_threads() -> int:
    """The threads each method runs with: :data:`THREADS`, or fewer where ``OMP_NUM_THREADS`` asks for fewer
    (a run beside other work on a shared machine)."""
    asked = os.environ.get("OMP_NUM_THREADS", "")
    return min(THREADS, int(asked)) if asked.isdigit() and int(asked) > 0 else THREADS


def _field_from_voxels(d: np.ndarray, order: str) -> torch.Tensor:
    """A peer's displacement ``(*spatial, dims)`` in voxels to stnkit's field ``(dims, *spatial)``."""
    t = torch.from_numpy(np.ascontiguousarray(np.moveaxis(d, -1, 0))).float()[None]
    return field_from_pixels(t, order=order)[0]


def _check(pair: dict, u: torch.Tensor, theirs: np.ndarray) -> float:
    """Mean |moving warped by u (stnkit) - the method's own warped moving|."""
    ours = warp_field(pair["moving"][None], u[None])[0, 0].numpy()
    return float(np.abs(ours - theirs).mean())


def sitk_affine(pair: dict) -> tuple[torch.Tensor, float]:
    import SimpleITK as sitk

    sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(torch.get_num_threads())
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


def stnkit_register(pair: dict, transform: str, settings: dict) -> tuple[torch.Tensor, float]:
    """:func:`stnkit.registration.register` of the pair with ``settings``: its whole map as one field."""
    knobs = {k: v for k, v in settings.items() if transform in ("dense", "velocity") or k not in FIELD_KNOBS}
    res = register(pair["fixed"], pair["moving"], transform, **knobs)
    u = grid_to_field(res.grid[None])[0]
    return u, _check(pair, u, res.warped[0].numpy())


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


def measure(register_pair, pairs, num_classes: int) -> tuple[list[dict], torch.Tensor]:
    """Every method's measurement: ``register_pair(pair) -> (field, conversion check or None)`` on each pair
    of ``pairs`` (after one untimed call on pair 0), its :func:`registration_metrics`, its wall-clock seconds
    and its CPU seconds (``time.process_time``: every thread of this process, the peers' included; the
    measure of time that other work on the machine does not inflate); the records and the field of pair
    :data:`FIGURE_PAIR`."""
    register_pair(pairs.pair(0))
    records, first_field = [], None
    for i in range(len(pairs)):
        pair = pairs.pair(i)
        start, cpu = time.perf_counter(), time.process_time()
        u, check = register_pair(pair)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        rec = {"pair": i, **_metrics(pair, u, num_classes), "seconds": round(seconds, 4), "cpu_seconds": round(cpu, 4)}
        if check is not None:
            rec["conversion_check"] = round(check, 6)
        records.append(rec)
        if i == FIGURE_PAIR:
            first_field = u
    return records, first_field


def _syn_method(name: str):
    return {"ants-syn": ants_syn, "dipy-syn": dipy_syn}[name]


def _mean_std(xs: list[float]) -> tuple[float, float]:
    a = np.asarray(xs, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


MEASURES = ("dice", "folding", "epe", "seconds", "cpu_seconds")


def _means(records: list[dict]) -> dict:
    return {k: round(_mean_std([r[k] for r in records])[0], 5) for k in MEASURES}


PICK_RULE = (
    "per knob, the highest mean validation Dice among the trials that fold no more than SyN on the same pairs "
    "in less CPU time per pair; else among those that fold no more; else the highest Dice"
)


def _pick(trials: list[dict], bar: dict) -> tuple[dict, str]:
    """The issue's target applied on the validation pairs: the highest Dice among the trials that fold no
    more than SyN (``bar``) in less time; else among those that fold no more; else the highest Dice."""
    fold = [t for t in trials if t["folding"] <= bar["folding"]]
    fast = [t for t in fold if t["cpu_seconds"] < bar["cpu_seconds"]]
    pool, why = (
        (fast, "highest Dice of those folding no more than SyN in less time")
        if fast
        else (fold, "highest Dice of those folding no more than SyN (none was faster)")
        if fold
        else (trials, "highest Dice (every trial folded more than SyN)")
    )
    return max(pool, key=lambda t: t["dice"]), why


def tune_register(
    out: Path, bench: Bench, syn: str | None, num_classes: int, settings_from: Path | None = None
) -> dict:
    """Choose ``register``'s settings for each of its transforms on the validation pairs (the benchmark's
    :data:`REGISTER_START` and :data:`REGISTER_SEARCH`, one knob at a time, by :func:`_pick` against SyN on the same pairs); every
    trial and the choice are kept in ``OUT/runs/register-tuning.json`` as they finish (resumed from it).

    ``settings_from``: another benchmark's ``register-tuning.json`` whose choice is taken as it is (no search
    here; a 3-D run with the settings chosen on the 2-D validation pairs), said so in this one's file."""
    path = out / "runs" / "register-tuning.json"
    log = json.loads(path.read_text()) if path.is_file() else {}
    if log.get("bench") not in (None, asdict(bench)):
        raise ValueError(f"{path} holds the search of another benchmark ({log['bench']}); use another --out")
    if settings_from is not None and "chosen" not in log:
        theirs = json.loads(Path(settings_from).read_text())
        if set(theirs.get("chosen", {})) != set(REGISTER_ROWS.values()):
            raise ValueError(
                f"--register-settings {settings_from} holds no finished search (its 'chosen' is incomplete)"
            )
        keep = ("split", "start", "search", "rule", "syn", "chosen")
        log = {"bench": asdict(bench), "settings_from": str(settings_from), "from_bench": theirs["bench"]}
        log.update({k: theirs[k] for k in keep}, trials=[])
        log["searched_trials"] = len(theirs["trials"])
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(log, indent=2) + "\n")
    if log.get("settings_from"):
        return log
    start, search = REGISTER_START, REGISTER_SEARCH
    knobs = [[k, list(v)] for k, v in search]
    if log.get("start", start) != start or log.get("search", knobs) != knobs:
        raise ValueError(
            f"{path} holds a search from other settings or knobs ({log['start']}; {log['search']}) than today's "
            f"({start}; {knobs}); use another --out or move that file away"
        )
    log.setdefault("bench", asdict(bench))
    log.setdefault("split", "val: load_test_set(split='val'), seed test_seed + 1000, never a test pair")
    log.setdefault("start", start)
    log.setdefault("search", knobs)
    log.setdefault("rule", PICK_RULE)
    log.setdefault("trials", [])
    log.setdefault("chosen", {})
    path.parent.mkdir(parents=True, exist_ok=True)

    def save():
        atomic_write_text(path, json.dumps(log, indent=2) + "\n")

    pairs = load_test_set(TrainConfig(dataset=bench.dataset, volume_size=bench.size), split="val", size=bench.val_pairs)
    if "syn" not in log:
        log["syn"] = None
        if syn is not None:
            print(f"registration: {syn} on {bench.val_pairs} validation pairs (the bar)", flush=True)
            records, _ = measure(_syn_method(syn), pairs, num_classes)
            log["syn"] = {"method": syn, **_means(records), "threads": torch.get_num_threads()}
        save()
    # without SyN every trial passes the bar: the highest Dice
    bar = log["syn"] or {"folding": float("inf"), "cpu_seconds": float("inf")}
    done = {(t["transform"], json.dumps(t["settings"], sort_keys=True)): t for t in log["trials"]}
    for transform in REGISTER_ROWS.values():
        if transform in log["chosen"]:
            continue
        field = transform in ("dense", "velocity")
        current = {k: v for k, v in start.items() if field or k not in FIELD_KNOBS}
        for knob, values in search:
            if knob not in current:
                continue
            tried = []
            for value in values:
                settings = {**current, knob: value}
                key = (transform, json.dumps(settings, sort_keys=True))
                if key not in done:
                    print(f"registration: tuning register {transform} {settings}", flush=True)
                    records, _ = measure(
                        lambda p, t=transform, s=settings: stnkit_register(p, t, s), pairs, num_classes
                    )
                    trial = {"transform": transform, "knob": knob, "settings": settings, **_means(records)}
                    trial["threads"] = torch.get_num_threads()
                    log["trials"].append(trial)
                    done[key] = trial
                    save()
                tried.append(done[key])
            best, why = _pick(tried, bar)
            current = dict(best["settings"])
        log["chosen"][transform] = {"settings": current, "why": why, "validation": {k: best[k] for k in MEASURES}}
        save()
    return log


def fieldnet_config(row: str, options: dict | None = None, bench: Bench | None = None) -> TrainConfig:
    """The training options of a fieldnet row: fieldnet's recipe on the benchmark's dataset and size, the
    command line's ``options``, then the row's own."""
    bench = bench or default_bench()
    base = {**FIELDNET_BASE, "volume_size": bench.size}
    return TrainConfig.for_model(
        "fieldnet", None, dataset=bench.dataset, **{**base, **(options or {}), **FIELDNET_ROWS[row]}
    )


def train_fieldnet(out: Path, row: str, options: dict | None, bench: Bench | None = None, quiet: bool = True):
    """The trained model of ``row`` (trained now, or resumed, unless its run has finished)."""
    from stnkit.train.checkpoint import load_model
    from stnkit.train.run import train

    run = out / "runs" / row
    if not (run / "results.json").is_file():
        resume = (run / "checkpoints" / "last.ckpt").is_file()
        config = fieldnet_config(row, options, bench)
        train(config, run, resume=resume, overwrite=not resume and run.exists(), quiet=quiet)
    model, _ = load_model(run / "model.safetensors")
    return model.eval()


def run_method(
    out: Path,
    method: str,
    pairs,
    num_classes: int,
    options: dict | None = None,
    bench: Bench | None = None,
    settings_from: Path | None = None,
) -> dict:
    """Register every pair with ``method``; its record (kept in ``OUT/runs/METHOD.json``)."""
    bench = bench or default_bench()
    extra: dict = {}
    if method == "none":

        def fn(pair):
            return torch.zeros_like(pair["field"]), None

    elif method == "true-affine":
        family = get_transform("affine", dims=pairs.dims)

        def fn(pair):
            return grid_to_field(family.grid(pair["affine"][None], pairs.spatial))[0], None

    elif method == "sitk-affine":
        fn = sitk_affine
    elif method in ("ants-syn", "dipy-syn"):
        fn = _syn_method(method)
    elif method in REGISTER_ROWS:
        transform = REGISTER_ROWS[method]
        tuning = tune_register(out, bench, peer_syn(), num_classes, settings_from)
        settings = tuning["chosen"][transform]["settings"]
        extra = {"settings": settings, "chosen_on": "validation pairs, runs/register-tuning.json"}

        def fn(pair):
            return stnkit_register(pair, transform, settings)

    elif method in FIELDNET_ROWS:
        model = train_fieldnet(out, method, options, bench)

        def fn(pair):
            with torch.no_grad():
                return model(torch.cat([pair["moving"], pair["fixed"]])[None])[0], None

    else:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    records, first_field = measure(fn, pairs, num_classes)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    torch.save(first_field, out / "runs" / f"{method}.pair{FIGURE_PAIR}.pt")
    record = {"method": method, "threads": torch.get_num_threads(), **extra, "pairs": records}
    if method in FIELDNET_ROWS:
        results = json.loads((out / "runs" / method / "results.json").read_text())
        record["fit_seconds"] = results["fit_seconds"]
        record["config"] = results["config"]
    atomic_write_text(out / "runs" / f"{method}.json", json.dumps(record, indent=2) + "\n")
    return record


def summarize(out: Path, methods: list[str], wall_seconds: float | None = None, bench: Bench | None = None) -> dict:
    bench = bench or default_bench()
    table = {}
    for method in methods:
        path = out / "runs" / f"{method}.json"
        if not path.is_file():
            continue
        rec = json.loads(path.read_text())
        pairs = rec["pairs"]
        # records written before the thread count was kept ran at THREADS
        row = {"n": len(pairs), "threads": rec.get("threads", THREADS)}
        for key in ("dice_before", "dice", "folding", "epe", "seconds", "cpu_seconds"):
            if all(key in p for p in pairs):  # records written before CPU time was kept have none
                m, s = _mean_std([p[key] for p in pairs])
                row[key] = {"mean": round(m, 4), "std": round(s, 4)}
        checks = [p["conversion_check"] for p in pairs if "conversion_check" in p]
        if checks:
            row["conversion_check_max"] = max(checks)
        for key in ("fit_seconds", "settings"):
            if key in rec:
                row[key] = rec[key]
        if "config" in rec:  # what a fieldnet row trained with
            row["trained"] = {k: rec["config"][k] for k in ("epochs", "train_size", "batch_size")}
        table[method] = row
    tuning = out / "runs" / "register-tuning.json"
    search = None
    if tuning.is_file() and any(m in table for m in REGISTER_ROWS):
        log = json.loads(tuning.read_text())
        keep = ("split", "start", "search", "rule", "syn", "chosen", "settings_from", "from_bench")
        trials = log.get("searched_trials", len(log["trials"]))
        search = {"file": "runs/register-tuning.json", "trials": trials, **{k: log.get(k) for k in keep}}
    return {
        "description": "registration benchmark on held-out synthetic pairs, by `stnkit reproduce registration`",
        "dataset": bench.dataset,
        "size": bench.size,
        "test_pairs": bench.test_pairs,
        "val_pairs": bench.val_pairs,
        "methods": methods,
        "machine": machine_info(),
        "torch": torch.__version__,
        "wall_seconds": wall_seconds,
        "table": table,
        "register_search": search,
    }


def _value_text(value) -> str:
    """A setting as the command line spells it: a per-level schedule as ``10x10x0``."""
    return "x".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def _settings_text(settings: dict) -> str:
    return ", ".join(f"{k} {_value_text(v)}" for k, v in settings.items())


def render_markdown(summary: dict) -> str:
    rows = []
    for method in summary["methods"]:
        r = summary["table"].get(method)
        if r is None:
            rows.append([LABELS[method], "not run yet", "", "", "", "", "", ""])
            continue
        rows.append(
            [
                LABELS[method],
                f"{r['dice']['mean']:.3f} ± {r['dice']['std']:.3f}",
                f"{r['folding']['mean']:.3f}",
                f"{r['epe']['mean']:.2f}",
                f"{r['seconds']['mean']:.3f}",
                f"{r['cpu_seconds']['mean']:.3f}" if "cpu_seconds" in r else "–",
                str(r.get("threads", THREADS)),
                str(r["n"]),
            ]
        )
    before = next(iter(summary["table"].values()), None)
    head = [
        "method",
        "Dice after",
        "folded %",
        "end-point error (voxels)",
        "s / pair",
        "CPU s / pair",
        "threads",
        "pairs",
    ]
    lines = markdown_table(head, rows)
    info = dataset_info(summary["dataset"])
    size = "x".join([str(summary.get("size", info.canvas_size))] * info.dims)
    lines += [
        "",
        f"Held-out `{summary['dataset']}` test pairs ({size}, test seed 0, never a training draw); Dice: mean over "
        "the four foreground labels, ± the std over pairs"
        + (f"; Dice before registration {before['dice_before']['mean']:.3f}" if before else "")
        + ". End-point error: mean over the fixed image's foreground, against the true field. "
        f"Seconds per pair: wall clock on {summary['machine']['cpus']} CPU cores with the threads of the column, "
        "beside other work, after one untimed registration of pair 0; CPU seconds: the process's CPU time, "
        "every thread counted, which the other work does not inflate "
        "(fieldnet: inference only; its training time is in registration.json, `fit_seconds`; the fits ran at "
        "different loads of the shared machine).",
    ]
    settings = [
        (m, summary["table"][m]["settings"]) for m in REGISTER_ROWS if "settings" in summary["table"].get(m, {})
    ]
    if settings:
        lines += [
            "",
            "`stnkit register`'s settings, chosen on the validation pairs (`runs/register-tuning.json`): "
            + "; ".join(f"{REGISTER_ROWS[m]}: {_settings_text(s)}" for m, s in settings)
            + ".",
        ]
    return "\n".join(lines) + "\n"


def _times(a: dict, b: dict) -> tuple[list[float], str]:
    """The ratios of ``b``'s time per pair to ``a``'s (wall clock, and CPU where both rows have it), and the text."""
    ratios = [b["seconds"]["mean"] / max(a["seconds"]["mean"], 1e-9)]
    text = f"{a['seconds']['mean']:.3f} vs {b['seconds']['mean']:.3f} s a pair"
    if "cpu_seconds" in a and "cpu_seconds" in b:
        ratios.append(b["cpu_seconds"]["mean"] / max(a["cpu_seconds"]["mean"], 1e-9))
        text += f", CPU {a['cpu_seconds']['mean']:.3f} vs {b['cpu_seconds']['mean']:.3f} s"
    text += f" ({a.get('threads', THREADS)} vs {b.get('threads', THREADS)} threads)"
    return ratios, text


def _targets(summary: dict) -> list[str]:
    """The issue's targets, as far as the table measures them (time: wall clock, and CPU time where both rows
    have it; a target on time is reached when both are)."""
    t = summary["table"]
    syn = next((m for m in ("ants-syn", "dipy-syn") if m in t), None)
    register_rows = [m for m in REGISTER_ROWS if m in t]
    fields = [m for m in ("register-dense", "register-velocity") if m in t]
    lines = []
    if not register_rows:
        lines.append(
            "- `stnkit register` against SyN, and fieldnet within 0.02 Dice of `stnkit register` at 100x less time: "
            "not measured (no `stnkit register` rows in this table)."
        )
    for m in register_rows:
        # the fields against SyN (the target); the affine stage like for like, against SimpleITK's affine
        peer = "sitk-affine" if m == "register-affine" else syn
        if peer not in t:
            continue
        r, s = t[m], t[peer]
        ratios, times = _times(r, s)
        missed = [
            name
            for name, ok in (
                ("Dice", r["dice"]["mean"] >= s["dice"]["mean"]),
                ("folding", r["folding"]["mean"] <= s["folding"]["mean"]),
                ("time", min(ratios) > 1.0),
            )
            if not ok
        ]
        lines.append(
            f"- {LABELS[m]} vs {LABELS[peer]}: Dice {r['dice']['mean']:.3f} vs {s['dice']['mean']:.3f}, "
            f"folded {r['folding']['mean']:.3f} vs {s['folding']['mean']:.3f} %, {times}: "
            + ("reached." if not missed else f"not reached ({', '.join(missed)}).")
        )
    if fields:
        best = max(fields, key=lambda m: t[m]["dice"]["mean"])
        b = t[best]
        for row in (m for m in FIELDNET_ROWS if m in t):
            f = t[row]
            gap = f["dice"]["mean"] - b["dice"]["mean"]
            ratios, times = _times(f, b)
            missed = [name for name, ok in (("Dice", gap >= -0.02), ("time", min(ratios) >= 100)) if not ok]
            lines.append(
                f"- {LABELS[row]} vs {LABELS[best]} (the better `stnkit register` field on the test pairs): Dice "
                f"{f['dice']['mean']:.3f} vs {b['dice']['mean']:.3f} ({gap:+.3f}), "
                f"{' and '.join(f'{x:.0f}x' for x in ratios)} less time per pair ({times}): "
                + ("reached." if not missed else f"not reached ({', '.join(missed)}).")
            )
    elif syn is not None:
        for row in (m for m in FIELDNET_ROWS if m in t):
            f, s = t[row], t[syn]
            lines.append(
                f"- {LABELS[row]} beside {LABELS[syn]} (no `stnkit register` to compare with): Dice "
                f"{f['dice']['mean']:.3f} vs {s['dice']['mean']:.3f} ({f['dice']['mean'] - s['dice']['mean']:+.3f}), "
                f"{s['seconds']['mean'] / max(f['seconds']['mean'], 1e-9):.0f}x less time per pair."
            )
    return lines


def _search_section(summary: dict) -> list[str]:
    """How ``stnkit register``'s settings were chosen: the search, the rule, the validation numbers."""
    search = summary.get("register_search")
    if not search:
        return []
    rows = []
    for transform, c in search["chosen"].items():
        v = c["validation"]
        rows.append(
            [
                f"register, {transform}",
                _settings_text(c["settings"]),
                f"{v['dice']:.3f}",
                f"{v['folding']:.3f}",
                f"{v['seconds']:.3f}",
                f"{v['cpu_seconds']:.3f}",
            ]
        )
    syn = search.get("syn")
    if syn:
        cells = [f"{syn['dice']:.3f}", f"{syn['folding']:.3f}", f"{syn['seconds']:.3f}", f"{syn['cpu_seconds']:.3f}"]
        rows.append([LABELS[syn["method"]] + " (the bar)", "its defaults", *cells])
    knobs = "; ".join(f"{k}: {', '.join(map(_value_text, v))}" for k, v in search["search"])
    where = f"On {summary.get('val_pairs', '')} **validation** pairs ({search['split']}), never on the test pairs"
    file = f"`{search['file']}` beside this table's JSON"
    if search.get("settings_from"):
        b = search["from_bench"]
        size = "x".join([str(b["size"])] * dataset_info(b["dataset"]).dims)
        where = (
            f"Not searched on this benchmark: taken from `{search['settings_from']}`, chosen there on "
            f"{b['val_pairs']} **validation** pairs of `{b['dataset']}` ({size}; {search['split']}), and the "
            "numbers below are that search's, on those pairs. There"
        )
        file = f"`{search['settings_from']}`"
    return [
        "## How `stnkit register`'s settings were chosen",
        "",
        f"{where}: from {_settings_text(search['start'])}, one knob at a time ({knobs}; `smooth` and "
        f"`field_steps` for the fields only), {search['trials']} trials in all, every one in {file}. "
        f"The rule: {search['rule']}. Every other option at `register()`'s defaults.",
        "",
        *markdown_table(["method", "settings", "val Dice", "val folded %", "val s / pair", "val CPU s / pair"], rows),
    ]


def render_page(
    summary: dict, figure: str, out: str = "results/registration", page: str = "docs/results/registration.md"
) -> str:
    """docs/results/registration.md: the command, the table (:func:`render_markdown`), the targets, the search,
    the figure."""
    t = summary["table"]
    dims = dataset_info(summary["dataset"]).dims
    size = "x".join([str(summary["size"])] * dims)
    trained = t.get("fieldnet", {}).get("trained") or {k: FIELDNET_BASE[k] for k in ("epochs", "train_size")}
    flags = "" if summary["dataset"] == DATASET else f" --dataset {summary['dataset']} --volume-size {summary['size']}"
    if list(summary["methods"]) != default_methods():
        flags += f" --models {','.join(summary['methods'])}"
    if (summary.get("register_search") or {}).get("settings_from"):
        flags += f" --register-settings {summary['register_search']['settings_from']}"
    for key in ("epochs", "train_size"):
        if "fieldnet" in t and trained[key] != FIELDNET_BASE[key]:
            flags += f" --{key.replace('_', '-')} {trained[key]}"
    fits = [
        f"{m} {t[m]['fit_seconds'] / 60:.1f} min ({t[m]['trained']['epochs']} epochs of "
        f"{t[m]['trained']['train_size']} fresh pairs, batch {t[m]['trained']['batch_size']})"
        for m in FIELDNET_ROWS
        if m in t and t[m].get("fit_seconds") is not None and "trained" in t[m]
    ]
    lines = [
        "# Registration: stnkit register and fieldnet beside SimpleITK and ANTs on synthetic pairs"
        + ("" if dims == 2 else " (3-D)"),
        "",
        "```bash",
        f"OMP_NUM_THREADS=1 stnkit reproduce registration{flags} --out {out} --update-readme --readme {page}",
        f"stnkit train --dataset {summary['dataset']} --model fieldnet --volume-size {summary['size']} --train-size "
        f"{trained['train_size']} --epochs {trained['epochs']}   # the fieldnet row alone",
        "```",
        "",
        f"Generated from `{out}/registration.json` (`{summary['dataset']}`, "
        f"{size}, {summary['test_pairs']} held-out test pairs; the methods and the "
        "measures: `src/stnkit_experiments/registration.py`)."
        + (" Training: " + ", ".join(fits) + " on the same shared CPU cores." if fits else ""),
        "",
        render_markdown(summary).rstrip(),
        "",
        "## Targets (issue 27)",
        "",
        *_targets(summary),
        "",
        *_search_section(summary),
        "",
        f"![one test pair: each method's warped moving image, deformed grid and Jacobian determinant]({figure})",
        "",
    ]
    return "\n".join(lines)


def make_figure(out: Path, methods: list[str], bench: Bench | None = None) -> Path | None:
    from stnkit.train.show import registration_figure

    bench = bench or default_bench()
    fields = {}
    for method in methods:
        path = out / "runs" / f"{method}.pair{FIGURE_PAIR}.pt"
        if path.is_file() and method != "none":
            fields[method] = torch.load(path, weights_only=True)  # short names: the panel titles are small
    if not fields:
        return None
    pairs = load_test_set(TrainConfig(dataset=bench.dataset, volume_size=bench.size), size=bench.test_pairs)
    path = out / "figures" / "registration_pair.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    registration_figure(pairs.pair(FIGURE_PAIR), fields, path, f"{bench.dataset} test pair {FIGURE_PAIR}")
    return path


def run_registration(
    out: Path,
    methods: list[str],
    options: dict | None = None,
    report_only: bool = False,
    bench: Bench | None = None,
    settings_from: Path | None = None,
) -> dict:
    """Run every method of ``methods`` not yet done (unless ``report_only``); the summary. ``settings_from``:
    :func:`tune_register`'s."""
    bench = bench or default_bench()
    threads = run_threads()
    torch.set_num_threads(threads)
    os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", str(threads))
    # ANTs samples its metric at random: unseeded, two runs of the same pairs differed (mean Dice 0.833 and 0.845,
    # runs/ants-syn.unseeded-run*.json); seeded, two runs at 2 threads agreed on 14 of 16 pairs (0.844, 0.845:
    # runs/ants-syn.seeded-run1.json and runs/earlier-2threads/ants-syn.json)
    os.environ.setdefault("ANTS_RANDOM_SEED", "1")
    previous = out / "registration.json"
    wall = (json.loads(previous.read_text()).get("wall_seconds") or 0.0) if previous.is_file() else 0.0
    pairs = load_test_set(TrainConfig(dataset=bench.dataset, volume_size=bench.size), size=bench.test_pairs)
    num_classes = dataset_info(bench.dataset).num_classes
    start = time.perf_counter()
    for method in methods:
        if report_only or (out / "runs" / f"{method}.json").is_file():
            continue
        print(f"registration: {method} on {bench.test_pairs} {bench.dataset} test pairs", flush=True)
        run_method(out, method, pairs, num_classes, options, bench, settings_from)
        summary = summarize(out, methods, round(wall + time.perf_counter() - start, 1), bench)
        write_summary(out, "registration", summary, render_markdown(summary))
    summary = summarize(out, methods, round(wall + time.perf_counter() - start, 1), bench)
    write_summary(out, "registration", summary, render_markdown(summary))
    make_figure(out, methods, bench)
    return summary


def default_methods() -> list[str]:
    """:data:`METHODS`, with dipy's SyN in place of ANTs' where antspyx is missing (none without either)."""
    syn = peer_syn()
    return [m for m in (syn if m == "ants-syn" else m for m in METHODS) if m is not None]
