"""``stnkit reproduce`` (the paper experiments) and ``stnkit experiments`` (the recipe log).

These commands live with the experiments, on top of the library: the ``stnkit`` command
line finds them through the ``stnkit.commands`` entry point (pyproject.toml).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from stnkit._io import atomic_write_text
from stnkit.cli.train import (
    _grid_options,
    _validate,
    add_config_arguments,
    config_from_args,
    given_options,
    option_errors,
)
from stnkit.train.config import TrainConfig

from ._checks import config_from_flags, refuse_others, refuse_table1_flags, rows_from
from .table1 import ROWS, TABLE1_DATASETS


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from . import table1 as rep

    out = Path(args.out)
    if args.dataset is None and args.experiment != "registration":
        args.dataset = "rts"  # budget's default, which every target but registration reads as before
    if args.experiment == "icstn":
        return _reproduce_icstn(args, out)
    if args.experiment == "mri":
        return _reproduce_mri(args, out)
    if args.experiment == "registration":
        return _reproduce_registration(args, out)
    if args.experiment == "homography":
        return _reproduce_homography(args, out)
    if args.experiment == "stgan":
        return _reproduce_stgan(args, out)
    if args.experiment in ("parts", "cub"):
        from .finegrained_cli import reproduce_finegrained

        return reproduce_finegrained(args, out, given_options(args))
    if args.seeds is None:  # each target's own default: table1 and budget 3; sequence and addition 1 (3-hour budget)
        args.seeds = 1 if args.experiment in ("sequence", "addition") else 3
    if args.experiment == "budget":
        return _reproduce_budget(args, out)
    if args.experiment == "sequence":
        return _reproduce_sequence(args, out)
    if args.experiment == "colocalization":
        return _reproduce_colocalization(args, out)
    if args.experiment == "addition":
        return _reproduce_addition(args, out)
    if args.check:
        if not (out / "table1.json").is_file():
            print(f"check failed: {out / 'table1.json'} does not exist (run stnkit reproduce table1 first)")
            return 1
        problems = rep.check_readme(Path(args.readme), out)
        for p in problems:
            print(f"check failed: {p}")
        if not problems:
            print(f"{args.readme} and {out / 'table1.md'} match {out / 'table1.json'}")
        return 1 if problems else 0
    _validate(config_from_args(args))
    # each cell: these defaults, its model's recipe, then the options given (reproduce.cell_config)
    options = _grid_options(args)
    base = args._config_defaults.replace(**options)
    if args.update_readme and rep.README_START not in (
        Path(args.readme).read_text() if Path(args.readme).is_file() else ""
    ):
        raise SystemExit(f"stnkit reproduce: {args.readme} has no {rep.README_START} block for --update-readme")
    datasets = (args.datasets or ",".join(rep.TABLE1_DATASETS)).split(",")
    for d in datasets:
        if d not in rep.TABLE1_DATASETS:
            raise SystemExit(f"stnkit reproduce: unknown dataset {d!r}; valid: {', '.join(rep.TABLE1_DATASETS)}")
    rows = (args.models or ",".join(rep.ROWS)).split(",")
    for r in rows:
        if r not in rep.ROWS:
            raise SystemExit(f"stnkit reproduce: unknown row {r!r}; valid: {', '.join(rep.ROWS)}")
    plan = rep.cells(datasets, rows, args.seeds)
    if args.dry_run:
        for cell in plan:
            print(cell.dirname)
        return 0
    if args.report_only:
        previous = json.loads((out / "table1.json").read_text()) if (out / "table1.json").is_file() else {}
        summary = rep.summarize_grid(out, base, args.seeds, previous.get("wall_seconds"))
        rep.write_outputs(out, summary)
    else:
        summary = rep.run_table1(out, base, plan, args.seeds, options=options)
    from stnkit.train.run import is_rank_zero

    if not is_rank_zero():
        return 0
    rep.make_figures(out, summary)
    if args.update_readme:
        rep.update_readme(Path(args.readme), out)
    print(rep.render_markdown(summary))
    print(f"wrote {out / 'table1.json'}, {out / 'table1.md'}, {out / 'figures'}")
    return 0


def _reproduce_registration(args: argparse.Namespace, out: Path) -> int:
    from . import registration as reg

    refuse_table1_flags(args, "registration", ("--datasets", "--check"))
    if args.update_readme and not Path(args.readme).name.startswith("registration"):
        raise SystemExit(
            "stnkit reproduce registration: --update-readme writes --readme docs/results/registration*.md, "
            f"got {args.readme}"
        )
    dataset = args.dataset or reg.DATASET
    if dataset not in reg.SIZES:
        raise SystemExit(
            f"stnkit reproduce registration: --dataset must be one of {', '.join(reg.SIZES)}, got {dataset!r}"
        )
    default = None if args.models else reg.default_methods()  # finds the installed SyN: only when needed
    methods = rows_from(args, "registration", (*reg.METHODS, "dipy-syn"), default, kind="method")
    # the options given train the fieldnet rows (on top of fieldnet's recipe)
    options = _grid_options(args)
    bench = reg.default_bench(dataset, options.get("volume_size"))
    with option_errors():
        for row in (m for m in methods if m in reg.FIELDNET_ROWS):
            _validate(reg.fieldnet_config(row, options, bench))
    if args.dry_run:
        for m in methods:
            print(m)
        return 0
    settings_from = Path(args.register_settings) if args.register_settings else None
    if settings_from is not None and not settings_from.is_file():
        raise SystemExit(f"stnkit reproduce registration: --register-settings {settings_from} is not a file")
    summary = reg.run_registration(
        out, methods, options, report_only=args.report_only, bench=bench, settings_from=settings_from
    )
    if args.update_readme:
        page = Path(args.readme)
        figure = os.path.relpath(out / "figures" / "registration_pair.png", page.parent)
        atomic_write_text(page, reg.render_page(summary, figure, os.path.relpath(out), os.path.relpath(page)))
        print(f"wrote {page}")
    print(reg.render_markdown(summary))
    print(f"wrote {out / 'registration.json'}, {out / 'registration.md'}, {out / 'figures' / 'registration_pair.png'}")
    return 0


def _reproduce_homography(args: argparse.Namespace, out: Path) -> int:
    from . import homography

    options = _grid_options(args)
    plan = homography.cells()
    with option_errors():
        for cell in plan:  # every cell's config is valid before any training
            _validate(homography.cell_config(cell, options), options)
    if args.dry_run:
        for cell in plan:
            print(cell.dirname)
        return 0
    try:
        docs = Path(args.docs) if args.docs else None
        summary, figure = homography.run_homography(out, options, report_only=args.report_only, docs=docs)
    except ImportError as err:  # scikit-image or OpenCV missing
        raise SystemExit(f"stnkit reproduce: {err}") from None
    print(homography.render_markdown(summary))
    print(f"wrote {out / 'homography.json'}, {out / 'homography.md'}, {figure}" + (f", {docs}" if docs else ""))
    return 0


# the stnkit train options stnkit reproduce stgan reads (the others are refused when given)
STGAN_OPTIONS = ("train_size", "val_size", "test_size", "batch_size", "image_size")


def _reproduce_stgan(args: argparse.Namespace, out: Path) -> int:
    from . import stgan

    refuse_table1_flags(args, "stgan")
    given = given_options(args)
    own = ", " + ", ".join(f for k, f in stgan.CLI_FLAGS.items() if k not in STGAN_OPTIONS and k != "size")
    refuse_others("stgan", given, STGAN_OPTIONS, own)
    if args.seeds not in (None, 1):
        raise SystemExit(f"stnkit reproduce stgan: one seed per row (--seeds 1), got --seeds {args.seeds}")
    rows = rows_from(args, "stgan", stgan.ROWS)
    options = {k: given[k] for k in ("train_size", "val_size", "test_size", "batch_size") if k in given}
    if "image_size" in given:
        h, w = given["image_size"]
        if h != w or h < 16:
            raise SystemExit(f"stnkit reproduce stgan: --image-size must be square and at least 16, got {h} {w}")
        options |= {"size": h, "loc_size": min(h, stgan.STGAN_DEFAULTS.loc_size)}
    config = config_from_flags(
        stgan.STGAN_DEFAULTS, stgan.CLI_FLAGS, args, options, "stgan", skip=(*STGAN_OPTIONS, "size")
    )
    if args.dry_run:
        for r in rows:
            print(stgan.run_dir(out, r, config))
        return 0
    summary = stgan.summarize(out, config, rows) if args.report_only else stgan.run_stgan(out, config, rows)
    stgan.write_outputs(out, summary, Path(args.docs) if args.docs else None)
    figure = stgan.make_figure(out, summary)
    print(stgan.render_markdown(summary), end="")
    print(f"wrote {out / 'stgan.json'}, {out / 'stgan.md'}" + (f", {figure}" if figure else ""))
    return 0


def _reproduce_icstn(args: argparse.Namespace, out: Path) -> int:
    from stnkit.train.run import is_rank_zero

    from . import icstn

    seeds = icstn.DEFAULT_SEEDS if args.seeds is None else args.seeds
    if seeds < 1:
        raise SystemExit(f"stnkit reproduce: --seeds must be >= 1, got {seeds}")
    rows = args.models.split(",") if args.models else list(icstn.ROWS)
    for r in rows:
        if r not in icstn.ROWS:
            raise SystemExit(f"stnkit reproduce: unknown icstn row {r!r}; valid: {', '.join(icstn.ROWS)}")
    options = _grid_options(args)
    if "ic_steps" in options:
        raise SystemExit(
            "stnkit reproduce: --ic-steps is set by each icstn row (ic-stn-1, -2, -4), not on the command line"
        )
    base = args._config_defaults.replace(**options)
    plan = icstn.cells(rows, seeds)
    with option_errors():
        for cell in plan:  # every cell's config is valid before any training
            _validate(icstn.cell_config(cell, base, options), options)
    if args.dry_run:
        for cell in plan:
            print(cell.dirname)
        return 0
    if args.report_only:
        previous = json.loads((out / "icstn.json").read_text()) if (out / "icstn.json").is_file() else {}
        summary = icstn.summarize(out, base, seeds, previous.get("wall_seconds"))
        icstn.write_outputs(out, summary)
    else:
        summary = icstn.run_icstn(out, base, plan, seeds, options=options)
    if not is_rank_zero():
        return 0
    figure = icstn.make_figure(out)
    print(icstn.render_markdown(summary))
    print(f"wrote {out / 'icstn.json'}, {out / 'icstn.md'}" + (f", {figure}" if figure else ""))


def _reproduce_mri(args: argparse.Namespace, out: Path) -> int:
    from . import realmri

    seeds = 3 if args.seeds is None else args.seeds
    if seeds < 1:
        raise SystemExit(f"stnkit reproduce: --seeds must be >= 1, got {seeds}")
    realmri.run_mri(out, seeds)
    print(
        f"wrote {out / 'registration-mri.json'}, {out / 'registration-mri.md'}, {out / 'figures' / 'registration-mri.png'}"
    )
    return 0


def _reproduce_sequence(args: argparse.Namespace, out: Path) -> int:
    from . import sequence as rs

    models = list(rs.SEQUENCE_ROWS) if args.models is None else args.models.split(",")
    for m in models:
        if m not in rs.SEQUENCE_ROWS:
            raise SystemExit(f"stnkit reproduce: unknown model {m!r}; valid: {', '.join(rs.SEQUENCE_ROWS)}")
    if args.seeds < 1:
        raise SystemExit(f"stnkit reproduce: --seeds must be >= 1, got {args.seeds}")
    options = _grid_options(args)
    with option_errors():
        base = rs.SEQUENCE_DEFAULTS.replace(**options)
    if args.dry_run:
        for m in models:
            for s in range(args.seeds):
                print(rs.run_dir(Path(""), m, s))
        return 0
    if args.report_only:
        summary = rs.summarize_sequence(out, base, models, args.seeds)
        rs.write_sequence_outputs(out, summary)
    else:
        summary = rs.run_sequence(out, base, models, args.seeds, options)
    from stnkit.train.run import is_rank_zero

    if not is_rank_zero():
        return 0
    rs.attention_figure(out)
    print(rs.render_sequence_markdown(summary))
    print(f"wrote {out / 'sequence.json'}, {out / 'sequence.md'}, {out / 'figures' / 'sequence_attention.png'}")
    return 0


def _reproduce_addition(args: argparse.Namespace, out: Path) -> int:
    from . import addition as add

    refuse_table1_flags(args, "addition")
    if args.seeds < 1:
        raise SystemExit(f"stnkit reproduce: --seeds must be >= 1, got {args.seeds}")
    rows = rows_from(args, "addition", add.ROWS)
    _validate(config_from_args(args))
    options = _grid_options(args)
    base = args._config_defaults.replace(**options)
    plan = add.addition_cells(rows, args.seeds)
    if args.dry_run:
        for cell in plan:
            print(cell.dirname)
        return 0
    if args.report_only:
        previous = json.loads((out / "addition.json").read_text()) if (out / "addition.json").is_file() else {}
        summary = add.summarize_addition(out, base, args.seeds, previous.get("wall_seconds"))
        add.write_addition(out, summary)
    else:
        summary = add.run_addition(out, base, plan, args.seeds, options=options)
    from stnkit.train.run import is_rank_zero

    if not is_rank_zero():
        return 0
    figure = add.addition_figure(out)
    print(add.render_addition_markdown(summary))
    print(f"wrote {out / 'addition.json'}, {out / 'addition.md'}" + (f", {figure}" if figure else ""))
    return 0


def _reproduce_budget(args: argparse.Namespace, out: Path) -> int:
    from stnkit.data import DISTORTIONS

    from .budget import BUDGET_MODELS, render_budget, run_budget

    if args.dataset not in DISTORTIONS:
        raise SystemExit(f"stnkit reproduce: --dataset must be one of {', '.join(DISTORTIONS)}, got {args.dataset!r}")
    if not args.minutes > 0:
        raise SystemExit(f"stnkit reproduce: --minutes must be > 0, got {args.minutes}")
    if args.seeds < 1:
        raise SystemExit(f"stnkit reproduce: --seeds must be >= 1, got {args.seeds}")
    models = [m.strip() for m in args.models.split(",")] if args.models else list(BUDGET_MODELS)
    for m in models:
        if m not in BUDGET_MODELS:
            raise SystemExit(f"stnkit reproduce: --models must be among {', '.join(BUDGET_MODELS)}, got {m!r}")
    # the models a user gets from `stnkit train` (its defaults and each model's recipe, not
    # table1's paper networks): the main job's, each checked with the options given
    options = _grid_options(args)
    for m in models:
        with option_errors():
            _validate(TrainConfig.for_model(m, TrainConfig(), **{**options, "dataset": args.dataset}), options)
    summary = run_budget(out, args.dataset, args.minutes, TrainConfig(), args.seeds, models, **options)
    print(render_budget(summary), end="")
    print(f"wrote {out / f'budget_{args.dataset}.json'} and {out / f'budget_{args.dataset}.md'}")
    return 0


def _reproduce_colocalization(args: argparse.Namespace, out: Path) -> int:
    from . import colocalization as co

    kinds = args.kinds.split(",")
    for k in kinds:
        if k not in co.COLOC_KINDS:
            raise SystemExit(f"stnkit reproduce: --kinds must be from {', '.join(co.COLOC_KINDS)}, got {k!r}")
    classes = []
    for c in args.classes.split(","):
        if c not in tuple(map(str, co.COLOC_CLASSES)):
            raise SystemExit(f"stnkit reproduce: --classes must be digits 0-9 separated by commas, got {c!r}")
        classes.append(int(c))
    if args.seeds < 1:
        raise SystemExit(f"stnkit reproduce: --seeds must be >= 1, got {args.seeds}")
    recipe = co.COLOC_DEFAULT_RECIPE if args.coloc_recipe is None else args.coloc_recipe
    if recipe not in co.COLOC_RECIPES:
        raise SystemExit(
            f"stnkit reproduce: --coloc-recipe must be one of {', '.join(co.COLOC_RECIPES)}, got {recipe!r}"
        )
    rounds = (
        co.COLOC_RECIPES[recipe].get("search_rounds", 0)
        if args.coloc_search_rounds is None
        else args.coloc_search_rounds
    )
    low = 0 if rounds > 0 else 1  # after the window search, no triplet epoch is a setting
    if args.coloc_epochs is not None and args.coloc_epochs < low:
        raise SystemExit(f"stnkit reproduce: --coloc-epochs must be >= {low}, got {args.coloc_epochs}")
    if args.coloc_descriptor is not None and args.coloc_descriptor not in co.DESCRIPTORS:
        raise SystemExit(
            f"stnkit reproduce: --coloc-descriptor must be one of {', '.join(co.DESCRIPTORS)}, "
            f"got {args.coloc_descriptor!r}"
        )
    if args.coloc_rand_patch is not None and args.coloc_rand_patch not in co.RAND_PATCHES:
        raise SystemExit(
            f"stnkit reproduce: --coloc-rand-patch must be one of {', '.join(co.RAND_PATCHES)}, "
            f"got {args.coloc_rand_patch!r}"
        )
    if args.coloc_init_scale is not None and not 0.0 < args.coloc_init_scale < 2.0:
        raise SystemExit(f"stnkit reproduce: --coloc-init-scale must be in (0, 2), got {args.coloc_init_scale}")
    given = {
        "epochs": args.coloc_epochs,
        "lr": args.coloc_lr,
        "descriptor": args.coloc_descriptor,
        "rand_patch": args.coloc_rand_patch,
        "init_scale": args.coloc_init_scale,
        "learn_scale": False if args.coloc_fixed_scale else None,
        "outside_weight": args.coloc_outside_weight,
        "encoder_augment": True if args.coloc_encoder_augment else None,
        "split": args.coloc_split,
        "search_rounds": args.coloc_search_rounds,
        "search_stride": args.coloc_search_stride,
        "search_steps": args.coloc_search_steps,
        "search_first": args.coloc_search_first,
    }
    # the recipe's options, then each flag given on top
    options = {**co.COLOC_RECIPES[recipe], **{k: v for k, v in given.items() if v is not None}}
    if args.coloc_scale_range is not None:
        try:
            options["scale_range"] = tuple(float(v) for v in args.coloc_scale_range.split(","))
        except ValueError:
            options["scale_range"] = args.coloc_scale_range  # refused below, in ColocConfig's words
    try:
        co.ColocConfig(**options)
    except (TypeError, ValueError) as err:
        name, _, rest = str(err).partition(" ")
        flag = co.CLI_FLAGS.get(name.partition("[")[0], name)
        raise SystemExit(f"stnkit reproduce: {flag} {rest}") from None
    if args.recipe_log is not None:
        md = co.write_recipe_log(Path(args.recipe_log))
        print(md, end="")
        return 0
    data_dir = given_options(args).get("data_dir")
    if args.report_only:
        summary = co.summarize_colocalization(out, kinds, classes, args.seeds)
        co.keep_wall_clock(out, summary)
        co.write_outputs(out, summary)
    else:
        summary = co.run_colocalization(out, kinds, classes, args.seeds, data_dir=data_dir, quiet=False, **options)
    co.make_figure(out, summary, data_dir=data_dir)
    print(co.render_markdown(summary), end="")
    print(f"wrote {out / 'colocalization.json'}, {out / 'colocalization.md'}, {out / 'figures' / 'colocalization.png'}")
    return 0


def _cmd_experiments(args: argparse.Namespace) -> int:
    from stnkit._io import atomic_write_text

    from .recipe_log import experiment_rows, render_log

    try:
        rows = experiment_rows(args.runs)
    except (FileNotFoundError, ValueError, KeyError) as err:
        raise SystemExit(f"stnkit: {err}") from None
    text = render_log(rows, args.title)
    print(text, end="")
    if args.out:
        out = Path(args.out)
        atomic_write_text(out, text)
        atomic_write_text(out.with_suffix(".json"), json.dumps(rows, indent=2) + "\n")
        print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0


# Table 1 keeps the paper's localisation nets, on the full input; 15 epochs for the CNNs and ST-CNNs
# (the FCNs take their recipe's 100)
REPRODUCE_DEFAULTS = TrainConfig(epochs=15, patience=None, loc_downsample=1)


def add_parsers(sub) -> None:
    """``stnkit reproduce`` and ``stnkit experiments`` (registered through the ``stnkit.commands`` entry point)."""
    exp = sub.add_parser(
        "experiments",
        help="experiment log: validation error per recipe (mean ± std over seeds) from results.json files",
    )
    exp.add_argument("runs", nargs="+", help="run directories or folders holding them (searched for results.json)")
    exp.add_argument("--out", default=None, help="write the markdown table here (and the rows as JSON beside it)")
    exp.add_argument("--title", default="Experiment log", help="heading of the markdown file")
    exp.set_defaults(func=_cmd_experiments)

    rep = sub.add_parser(
        "reproduce", help="reproduce the paper's results", formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    rep.add_argument(
        "experiment",
        choices=(
            "table1",
            "budget",
            "icstn",
            "sequence",
            "colocalization",
            "addition",
            "mri",
            "registration",
            "homography",
            "parts",
            "cub",
            "stgan",
        ),
        help="table1: distorted MNIST (R, RTS, P, E) and cluttered MNIST (TC); "
        "budget: CNN, ST-CNN and the PyTorch tutorial's networks for --minutes each on --dataset, "
        "from `stnkit train`'s defaults; "
        "icstn: CNN, ST-CNN and IC-STN with 1, 2, 4 steps on perturbed MNIST (Lin and Lucey 2017); "
        "sequence: CNN, ST-CNN and RNN-SPN on cluttered 3-digit sequences (Sonderby et al. 2015); "
        "colocalization: the appendix's co-localisation of digits on 84x84 canvases (--kinds, --classes); "
        "addition: MNIST addition (FCN, CNN, ST-FCN, 2xST-FCN; appendix A.1); "
        "mri: nibabel's test MRI moved by known rigid and affine transforms, stnkit register vs SimpleITK (TRE in mm); "
        "registration: stnkit register (affine, dense, velocity) and fieldnet beside SimpleITK affine and ANTs SyN "
        "on held-out shapes2d pairs (Dice, folding, end-point error, time); "
        "homography: mean corner error of identity, ORB + RANSAC and the homography networks on "
        "scikit-image's photographs (DeTone et al. 2016); "
        "parts: the backbone vs 1x, 2x, 4x parallel attention ST-CNN on two-part scenes; "
        "cub: the paper's 2x and 4x ST-CNN on CUB-200-2011 (--data-dir, the user's copy); "
        "stgan: ST-GAN's sequential adversarial homography warps (Lin et al. 2018) on a box composited into a "
        "rendered room, mean vertex error (px) per step beside a supervised bound",
    )
    rep.add_argument("--crop-size", type=int, default=None, help="parts, cub: each transformer's crop (px a side)")
    rep.add_argument("--docs", default=None, help="parts, stgan, homography: also write the markdown page here")
    rep.add_argument(
        "--parts-window-scale",
        type=float,
        default=None,
        help="parts: heatmap (soft-argmax) localisers, each window this fixed scale (0.25: 32 of 128 px)",
    )
    rep.add_argument(
        "--parts-part-weight",
        type=float,
        default=None,
        help="parts: weight of the loss naming each heatmap's part glyph (transformer t: part A, B, A, B)",
    )
    rep.add_argument("--parts-loc-size", type=int, default=None, help="parts: px a side the localisation nets read")
    rep.add_argument(
        "--parts-heatmap-temperature",
        type=float,
        default=None,
        help="parts: the heatmap localisers' softmax temperature (1; smaller: sharper)",
    )
    rep.add_argument("--stgan-steps", type=int, default=None, help="stgan: warp steps (3)")
    rep.add_argument("--stgan-iters", type=int, default=None, help="stgan: generator updates per adversarial step")
    rep.add_argument("--stgan-sup-iters", type=int, default=None, help="stgan: updates per supervised step (1000)")
    rep.add_argument("--stgan-loss", default=None, help="stgan: ns (non-saturating, spectral norm) or wgan-gp")
    rep.add_argument("--stgan-loc-size", type=int, default=None, help="stgan: the side the localisation nets read (64)")
    rep.add_argument("--stgan-perturb", type=float, default=None, help="stgan: the perturbation's corner offsets (0.3)")
    rep.add_argument(
        "--stgan-sup-redraw",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="stgan: the supervised row draws fresh perturbations for every update (the default)",
    )
    rep.add_argument("--stgan-critic-iters", type=int, default=None, help="stgan: critic updates per generator update")
    rep.add_argument("--stgan-disc-width", type=int, default=None, help="stgan: the critic's width (16)")
    rep.add_argument("--stgan-lr-d", type=float, default=None, help="stgan: the critic's learning rate (0.0001)")
    rep.add_argument("--stgan-lr-g", type=float, default=None, help="stgan: the generator's learning rate (0.0001)")
    rep.add_argument(
        "--stgan-critic-warmup",
        type=float,
        default=None,
        help="stgan: critic updates before the first step, a fraction of --stgan-iters (0.2)",
    )
    rep.add_argument(
        "--stgan-update-weight", type=float, default=None, help="stgan: the penalty on each update's size (0.3)"
    )
    rep.add_argument("--kinds", default="plain,cluttered", help="colocalization: canvases, plain and/or cluttered")
    rep.add_argument("--classes", default="0,1,2,3,4,5,6,7,8,9", help="colocalization: digit classes")
    rep.add_argument(
        "--coloc-recipe",
        default=None,
        help="colocalization: the settings the other --coloc-* flags change: paper (appendix A.2), constrained "
        "(the window fixed at 28 px) or search (constrained plus the label-free window search; the default), "
        "chosen on validation canvases, docs/experiments/colocalization/val/recipes.md",
    )
    rep.add_argument("--coloc-epochs", type=int, default=None, help="colocalization: epochs per problem (30)")
    rep.add_argument("--coloc-lr", type=float, default=None, help="colocalization: the transformer's learning rate")
    rep.add_argument(
        "--coloc-descriptor",
        default=None,
        help="colocalization: e(), concat (the paper: hidden layers + logits), concat_l2, logits_l2 or softmax",
    )
    rep.add_argument(
        "--coloc-rand-patch", default=None, help="colocalization: I^rand, fixed (28x28) or same (the crop's scale)"
    )
    rep.add_argument(
        "--coloc-init-scale", type=float, default=None, help="colocalization: start window scale (1 = identity)"
    )
    rep.add_argument(
        "--coloc-fixed-scale",
        action="store_true",
        help="colocalization: the window keeps --coloc-init-scale, only its position is learnt (1/3: 28 of 84 px)",
    )
    rep.add_argument(
        "--coloc-scale-range",
        default=None,
        help="colocalization: LO,HI, the window's scale kept in (LO, HI) (s = LO + (HI - LO) sigmoid)",
    )
    rep.add_argument(
        "--coloc-outside-weight",
        type=float,
        default=None,
        help="colocalization: weight of the penalty for sampling outside the canvas (stnkit.nn.coverage_penalty)",
    )
    rep.add_argument(
        "--coloc-encoder-augment",
        action="store_true",
        help="colocalization: train e()'s CNN on randomly shifted and rescaled digits",
    )
    rep.add_argument(
        "--coloc-split",
        default=None,
        help="colocalization: val (validation canvases, where recipes are chosen) or test (the reported ones)",
    )
    rep.add_argument(
        "--coloc-search-rounds",
        type=int,
        default=None,
        help="colocalization: rounds of the label-free window search before training (0: none, the paper's start)",
    )
    rep.add_argument(
        "--coloc-search-stride",
        type=int,
        default=None,
        help="colocalization: px between the search's candidate 28x28 windows (4)",
    )
    rep.add_argument(
        "--coloc-search-steps",
        type=int,
        default=None,
        help="colocalization: steps regressing the localisation net onto the searched windows (300)",
    )
    rep.add_argument(
        "--coloc-search-first",
        default=None,
        help="colocalization: the search's first round against the start window's crops (start) or against "
        "each other canvas's nearest window (best)",
    )
    rep.add_argument(
        "--recipe-log",
        default=None,
        help="colocalization: train nothing, write DIR/recipes.md and .json from the DIR/*.json validation summaries",
    )
    rep.add_argument(
        "--register-settings",
        default=None,
        help="registration: take stnkit register's settings from this register-tuning.json (another run's "
        "validation search) instead of searching them on this run's validation pairs",
    )
    rep.add_argument("--minutes", type=float, default=10.0, help="budget: minutes of fit per run")
    rep.add_argument(
        "--dataset",
        default=None,
        help="budget: the dataset (default rts); registration: shapes2d (default) or shapes3d",
    )
    rep.add_argument("--out", default="results", help="results directory")
    rep.add_argument(
        "--check", action="store_true", help="only verify that the --readme page and table1.md match table1.json"
    )
    rep.add_argument(
        "--readme", default="docs/results/table1.md", help="the page holding the table block (the docs' Table 1 page)"
    )
    rep.add_argument(
        "--update-readme", action="store_true", help="write the table into the --readme page's table block"
    )
    rep.add_argument(
        "--datasets", default=None, help=f"table1: comma-separated datasets (default: {','.join(TABLE1_DATASETS)})"
    )
    rep.add_argument(
        "--models",
        default=None,
        help=f"comma-separated table rows (table1: model-family, default {','.join(ROWS)}; "
        "budget: cnn, st-cnn, tutorial-cnn, tutorial-stn; icstn: cnn, st-cnn-projective, ic-stn-1, ic-stn-2, ic-stn-4; sequence: seq-cnn, seq-st-cnn, rnn-spn; addition: fcn, cnn, st-fcn, 2xst-fcn; registration: none, true-affine, sitk-affine, ants-syn (or dipy-syn), register-affine, register-dense, register-velocity, fieldnet, fieldnet-dice, fieldnet-long, fieldnet-120; default all)",
    )
    rep.add_argument(
        "--seeds",
        type=int,
        default=None,
        help="table1: seeds for CNN and ST-CNN affine (3); budget: seeds of every model (3); "
        "icstn, sequence, addition: seeds of every row (1)",
    )
    rep.add_argument("--dry-run", action="store_true", help="list the cells and exit")
    rep.add_argument(
        "--report-only", action="store_true", help="train nothing: rewrite the tables and figures from finished cells"
    )
    add_config_arguments(
        rep,
        REPRODUCE_DEFAULTS,
        exclude=("dataset", "model", "transform", "num_transformers", "st_size", "tps_grid_size", "seed"),
    )
    rep.set_defaults(func=_cmd_reproduce)
