"""``stnkit train``, ``eval``, ``show`` and ``predict``."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import typing
from dataclasses import fields
from pathlib import Path

from .config import TrainConfig, options_unused_by, row_key
from .reproduce import ROWS, TABLE1_DATASETS

_HELP = {
    "dataset": "distorted-MNIST dataset: mnist, r, rts, p, e, tc, perturbed",
    "data_dir": "directory with the four full-MNIST IDX files (default: the bundled 8k digits)",
    "val_size": "training digits held out for validation (model selection, early stopping)",
    "train_size": "use only the first N training digits",
    "test_size": "evaluate on only the first N test digits",
    "test_seed": "seed of the fixed test distortions",
    "model": "fcn, cnn, st-fcn, st-cnn, tutorial-cnn, tutorial-stn (the PyTorch tutorial's network) "
    "or ic-stn (inverse compositional STN)",
    "transform": "the transformers' family: translation, attention, similarity, affine, projective, tps",
    "num_transformers": "transformers in parallel (2 or 4 for the paper's 2x/4x ST-CNN)",
    "st_size": "the transformers' output size (SpatialTransformer's out_size; smaller downsamples)",
    "loc_downsample": "the localisation nets see the input averaged over N x N blocks (1: full resolution)",
    "bounded": "squash transformer parameters into a safe range (tanh)",
    "dropout": "dropout before the classifier's last layer",
    "hidden": "the FCN classifier's hidden width (default: matched to the CNN's parameter count on the same input)",
    "tps_grid_size": "with --transform tps: control points per side of the thin-plate spline's grid",
    "ic_steps": "with --model ic-stn: recurrent warps of the inverse compositional transformer",
    "epochs": "maximum number of epochs",
    "batch_size": "batch size",
    "optimizer": "adamw or sgd",
    "lr": "learning rate",
    "loc_lr_mult": "learning-rate multiplier for the localisation nets",
    "momentum": "SGD momentum",
    "weight_decay": "weight decay (not applied to biases)",
    "schedule": "learning-rate schedule: cosine, step (the paper's divide by 10) or none",
    "step_epochs": "with --schedule step: divide the learning rate by 10 every N epochs",
    "grad_clip": "clip gradient norm to this value",
    "consistency_weight": "weight of the transformation-consistency loss (0: off)",
    "consistency_strength": "strength of the extra random distortion for the consistency loss",
    "patience": "early stopping: epochs without validation improvement",
    "compile": "torch.compile the model (about 1.2x faster ST-CNN steps on 2 CPU cores after a compile of up to a minute)",
    "on_nonfinite": "a NaN or inf loss or gradient: stop training (naming the step) or skip the step",
    "max_time": "training budget in minutes: time a few steps, fit the epochs and the schedule into the budget, stop at it",
    "seed": "random seed (model init, training distortions, shuffling)",
    "deterministic": "bit-identical runs on CPU for the same options, seed and thread count (recorded in the checkpoint and results.json)",
    "num_workers": "data loader worker processes",
    "accelerator": "cpu, gpu or auto",
    "devices": "devices per node (an int, or auto)",
    "num_nodes": "number of nodes (multi-node DDP)",
    "strategy": "Lightning strategy: auto, ddp, ddp_spawn, ...",
    "limit_train_batches": "fraction (or number) of training batches per epoch",
    "limit_val_batches": "fraction (or number) of validation batches",
}


def _argument_type(name: str):
    """The command-line type of a :class:`TrainConfig` option, from its annotation.

    ``X | None`` reads as ``X`` (``None`` is the default, not something to type);
    ``int | float`` as :func:`_int_or_float`; ``bool`` becomes ``--flag/--no-flag``.
    """
    hint = typing.get_type_hints(TrainConfig)[name]
    kinds = set(typing.get_args(hint)) - {type(None)} or {hint}
    if kinds == {int, float}:
        return _int_or_float
    if len(kinds) == 1 and (kind := kinds.pop()) in (bool, int, float, str):
        return kind
    raise TypeError(f"TrainConfig.{name}: no command-line type for {hint}")


class _Default:
    """An option's default, told apart from the same value given on the command line."""

    def __init__(self, value):
        self.value = value

    def __str__(self) -> str:
        return str(self.value)


def add_config_arguments(parser: argparse.ArgumentParser, defaults: TrainConfig | None = None, exclude=()) -> None:
    """One ``--option`` per :class:`TrainConfig` field (``--num-transformers`` for ``num_transformers``)."""
    from .config import MODEL_RECIPES

    defaults = defaults or TrainConfig()
    parser.set_defaults(_config_defaults=defaults)
    for f in fields(TrainConfig):
        if f.name in exclude:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = _Default(getattr(defaults, f.name))
        own = sorted({m for m, recipe in MODEL_RECIPES.items() if f.name in recipe})
        help_text = _HELP.get(f.name, "")
        if own:
            values = ", ".join(f"{m} {MODEL_RECIPES[m][f.name]}" for m in own)
            help_text += f" (models with their own recipe: {values})"
        kind = _argument_type(f.name)
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        else:
            parser.add_argument(flag, type=kind, default=default, help=help_text)


def _int_or_float(text: str) -> int | float:
    """Lightning's limits: an int is a number of batches, a float a fraction."""
    value = float(text)
    return int(value) if value.is_integer() and "." not in text else value


def given_options(args: argparse.Namespace) -> dict:
    """The training options written on the command line (not left at their defaults)."""
    return {
        f.name: getattr(args, f.name)
        for f in fields(TrainConfig)
        if hasattr(args, f.name) and not isinstance(getattr(args, f.name), _Default)
    }


def _grid_options(args: argparse.Namespace) -> dict:
    """The options given to ``stnkit reproduce``: applied to every run, which sets its own model, data and seed."""
    return {k: v for k, v in given_options(args).items() if k not in ("model", "dataset", "seed")}


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The defaults, then the chosen model's own recipe, then the options given.

    An option :class:`TrainConfig` refuses ends the command with a one-line error.
    """
    defaults = getattr(args, "_config_defaults", TrainConfig())
    given = given_options(args)
    model = given.pop("model", defaults.model)
    with option_errors():
        return TrainConfig.for_model(model, defaults, **given)


@contextlib.contextmanager
def option_errors():
    """Turn the ``TypeError``/``ValueError`` of a refused :class:`TrainConfig` option into
    ``SystemExit("stnkit: --option must be ..., got ...")``: one line, no traceback."""
    try:
        yield
    except (TypeError, ValueError) as err:
        name, _, rest = str(err).partition(" ")
        if name in {f.name for f in fields(TrainConfig)}:
            raise SystemExit(f"stnkit: --{name.replace('_', '-')} {rest}") from None
        raise SystemExit(f"stnkit: {err}") from None


def _cmd_train(args: argparse.Namespace) -> int:
    from .checkpoint import checkpoint_config
    from .resume import resume_checkpoint
    from .run import train
    from .safety import NonFiniteError, TrainingInterrupted

    config = config_from_args(args)
    resume = args.resume
    if resume:
        # without a checkpoint (killed before the first one) train() starts afresh, over the partial logs
        path = resume_checkpoint(Path(args.out), resume, announce=False)
        if path is not None:
            resume = str(path)
            # continue the saved run: its options, except those given on this command line
            with option_errors():
                config = checkpoint_config(path).replace(**given_options(args))
    _validate(config, given_options(args))
    try:
        results = train(config, args.out, resume=resume, overwrite=args.overwrite)
    except TrainingInterrupted as stop:
        print(f"stnkit: {stop}", file=sys.stderr)
        return 130  # the shell's status for a Ctrl-C
    except NonFiniteError as err:
        raise SystemExit(f"stnkit: {err}") from None
    if results:
        print(f"test error: {results['test_error']:.2f}% ({results['test_size']} {config.dataset} test digits)")
        print(f"parameters: {results['num_parameters']:,} ({config.model}); epochs: {results['epochs']}")
        if "pose_spread" in results:
            pr = results["pose_spread"]
            print(
                f"pose spread: {pr['spread_st_px']:.2f} px with the transformer, {pr['spread_identity_px']:.2f} px without"
            )
        print(
            f"wrote {Path(args.out) / 'results.json'}, {Path(args.out) / 'show.png'}, {Path(args.out) / 'model.safetensors'}"
        )
    return 0


def _validate(config: TrainConfig, given=()) -> None:
    """Refuse an option that ``config``'s model ignores (given on the command line, or not at its default).

    Each option on its own is checked by :class:`TrainConfig` itself.
    """
    unused = options_unused_by(config.model, config.transform)
    defaults = TrainConfig()

    def is_set(name: str) -> bool:
        return name in given or getattr(config, name) != getattr(defaults, name)

    if is_set("hidden") and "hidden" in unused:
        raise SystemExit(f"stnkit: --hidden sets the FCN's width: --model must be fcn or st-fcn, got {config.model!r}")
    if is_set("ic_steps") and "ic_steps" in unused:
        raise SystemExit(
            f"stnkit: --ic-steps sets the IC-STN's recurrent warps: --model must be ic-stn, got {config.model!r}"
        )
    if config.model == "ic-stn" and config.transform == "tps":
        raise SystemExit("stnkit: --model ic-stn composes matrix warps: --transform must not be tps")
    if is_set("tps_grid_size") and "tps_grid_size" in unused:
        if config.transform != "tps":
            raise SystemExit(
                f"stnkit: --tps-grid-size sets the TPS control grid: --transform must be tps, got {config.transform!r}"
            )
        raise SystemExit(
            "stnkit: --tps-grid-size sets the TPS control grid: --model must have a transformer "
            f"(st-fcn, st-cnn or tutorial-stn), got {config.model!r}"
        )


def _cmd_eval(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from .._io import atomic_write_text
    from ..data import dataset_info
    from .checkpoint import load_model
    from .evaluate import check_input_size, confusion_png, evaluate, load_test_set

    model, config = load_model(args.checkpoint)
    if args.images is not None and args.dataset is None:  # already distorted: evaluated as they are
        images, labels = _read_labelled_idx(args.images, args.labels)
        images, labels = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1), torch.from_numpy(labels)
    else:
        digits = None if args.images is None else _read_labelled_idx(args.images, args.labels)
        ds = load_test_set(
            config, dataset=args.dataset, split=args.split, seed=args.seed, data_dir=args.data_dir, digits=digits
        )
        images, labels = ds.images, ds.labels
    check_input_size(config, images)
    result = evaluate(model, images, labels, num_classes=dataset_info(config.dataset).num_classes)
    source = args.images or f"{args.dataset or config.dataset} {args.split}"
    result.update({"checkpoint": str(args.checkpoint), "data": str(source)})
    print(f"error: {result['error']:.2f}% on {result['n']} images ({source})")
    print("per-class error %: " + ", ".join(f"{k}: {v}" for k, v in result["per_class_error"].items()))
    out = Path(args.checkpoint).parent / "eval" if args.out is None else Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "eval.json", json.dumps(result, indent=2) + "\n")
    confusion_png(
        result["confusion"], out / "confusion.png", f"{config.model} on {source}: {result['error']:.2f}% error"
    )
    print(f"wrote {out / 'eval.json'}, {out / 'confusion.png'}")
    return 0


def _read_labelled_idx(images_file, labels_file):
    """``--images`` and ``--labels``: (N, H, W) uint8 images and (N,) int64 labels."""
    import numpy as np

    from ..data.idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx
    from ..data.mnist import check_labelled

    if labels_file is None:
        raise ValueError("--images needs --labels")
    images = read_idx(images_file, IMAGES_MAGIC)
    labels = read_idx(labels_file, LABELS_MAGIC)
    check_labelled(images, labels, f"--images {images_file} and --labels {labels_file}")
    return images, labels.astype(np.int64)


def _cmd_show(args: argparse.Namespace) -> int:
    from .checkpoint import load_model
    from .evaluate import check_input_size, load_test_set, pose_spread
    from .show import show_figure

    if not 1 <= args.n <= 64:
        raise ValueError(f"--n must be an int in [1, 64] (samples drawn), got {args.n}")
    model, config = load_model(args.checkpoint)
    ds = load_test_set(config, dataset=args.dataset, split=args.split, seed=args.seed, data_dir=args.data_dir)
    images, labels = ds.images, ds.labels
    check_input_size(config, images)
    title = f"{row_key(config.model, config.transform)} on {args.dataset or config.dataset} {args.split}"
    if config.model.startswith("st-") and ds.params.ndim == 2:  # one digit per sample: its pose
        n = min(500, len(labels))
        pr = pose_spread(model, images[:n], ds.params[:n], ds.transform)
        title += f": pose spread {pr['spread_st_px']:.2f} px (without ST {pr['spread_identity_px']:.2f} px)"
        print(
            f"pose spread over {n} samples: {pr['spread_st_px']:.2f} px with the transformer, {pr['spread_identity_px']:.2f} px without"
        )
    # beside the checkpoint (in show/, not over the show.png that training wrote) unless --out says
    out = Path(args.checkpoint).parent / "show" / "show.png" if args.out is None else Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    show_figure(model, images, labels, out, title, n=args.n)
    print(f"wrote {out}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from ..data import dataset_info, fit_to_canvas, read_grey_png
    from .checkpoint import load_model

    model, config = load_model(args.checkpoint)
    canvas = dataset_info(config.dataset).canvas_size
    # every image read (and refused) before any answer is printed
    batch = [(path, fit_to_canvas(read_grey_png(path), canvas, invert=args.invert)) for path in args.images]
    for path, x in batch:
        with torch.no_grad():
            logits = model(x)
        if logits.ndim == 3:  # a digit sequence: one answer per position
            prob = torch.softmax(logits, dim=-1)[0]
            ks = prob.argmax(-1).tolist()
            ps = ", ".join(f"{float(prob[i, k]):.3f}" for i, k in enumerate(ks))
            print(f"{path}: {''.join(map(str, ks))} (p per digit {ps})")
            continue
        prob = torch.softmax(logits, dim=1)[0]
        k = int(prob.argmax())
        top = np.argsort(-prob.numpy())[:3]
        alts = ", ".join(f"{int(c)}: {float(prob[c]):.3f}" for c in top)
        print(f"{path}: {k} (p={float(prob[k]):.3f}; top 3 {alts})")
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from . import reproduce as rep

    out = Path(args.out)
    if args.experiment == "icstn":
        return _reproduce_icstn(args, out)
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
    from .run import is_rank_zero

    if not is_rank_zero():
        return 0
    rep.make_figures(out, summary)
    if args.update_readme:
        rep.update_readme(Path(args.readme), out)
    print(rep.render_markdown(summary))
    print(f"wrote {out / 'table1.json'}, {out / 'table1.md'}, {out / 'figures'}")
    return 0


def _reproduce_icstn(args: argparse.Namespace, out: Path) -> int:
    from . import icstn
    from .run import is_rank_zero

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
    from .run import is_rank_zero

    if not is_rank_zero():
        return 0
    rs.attention_figure(out)
    print(rs.render_sequence_markdown(summary))
    print(f"wrote {out / 'sequence.json'}, {out / 'sequence.md'}, {out / 'figures' / 'sequence_attention.png'}")
    return 0


def _reproduce_addition(args: argparse.Namespace, out: Path) -> int:
    from . import addition as add

    for flag, value in (
        ("--datasets", args.datasets),
        ("--check", args.check),
        ("--update-readme", args.update_readme),
    ):
        if value:
            raise SystemExit(f"stnkit reproduce addition: {flag} applies to table1 only")
    if args.seeds < 1:
        raise SystemExit(f"stnkit reproduce: --seeds must be >= 1, got {args.seeds}")
    rows = args.models.split(",") if args.models else list(add.ROWS)
    for r in rows:
        if r not in add.ROWS:
            raise SystemExit(f"stnkit reproduce addition: unknown row {r!r}; valid: {', '.join(add.ROWS)}")
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
    from .run import is_rank_zero

    if not is_rank_zero():
        return 0
    figure = add.addition_figure(out)
    print(add.render_addition_markdown(summary))
    print(f"wrote {out / 'addition.json'}, {out / 'addition.md'}" + (f", {figure}" if figure else ""))
    return 0


def _reproduce_budget(args: argparse.Namespace, out: Path) -> int:
    from ..data import DISTORTIONS
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
    if args.coloc_epochs < 1:
        raise SystemExit(f"stnkit reproduce: --coloc-epochs must be >= 1, got {args.coloc_epochs}")
    if args.coloc_descriptor not in co.DESCRIPTORS:
        raise SystemExit(
            f"stnkit reproduce: --coloc-descriptor must be one of {', '.join(co.DESCRIPTORS)}, "
            f"got {args.coloc_descriptor!r}"
        )
    if args.coloc_rand_patch not in co.RAND_PATCHES:
        raise SystemExit(
            f"stnkit reproduce: --coloc-rand-patch must be one of {', '.join(co.RAND_PATCHES)}, "
            f"got {args.coloc_rand_patch!r}"
        )
    if not 0.0 < args.coloc_init_scale < 2.0:
        raise SystemExit(f"stnkit reproduce: --coloc-init-scale must be in (0, 2), got {args.coloc_init_scale}")
    options = {
        "epochs": args.coloc_epochs,
        "descriptor": args.coloc_descriptor,
        "rand_patch": args.coloc_rand_patch,
        "init_scale": args.coloc_init_scale,
    }
    data_dir = given_options(args).get("data_dir")
    if args.report_only:
        summary = co.summarize_colocalization(out, kinds, classes, args.seeds)
        co.write_outputs(out, summary)
    else:
        summary = co.run_colocalization(out, kinds, classes, args.seeds, data_dir=data_dir, quiet=False, **options)
    co.make_figure(out, summary, data_dir=data_dir)
    print(co.render_markdown(summary), end="")
    print(f"wrote {out / 'colocalization.json'}, {out / 'colocalization.md'}, {out / 'figures' / 'colocalization.png'}")
    return 0


def _cmd_summarize(args: argparse.Namespace) -> int:
    from .._io import atomic_write_text
    from .report import summarize

    text = summarize(args.runs)
    print(text, end="")
    if args.out:
        atomic_write_text(args.out, text)
    return 0


def _cmd_experiments(args: argparse.Namespace) -> int:
    from .._io import atomic_write_text
    from .experiments import experiment_rows, render_log

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
    train = sub.add_parser(
        "train",
        help="train a model on a distorted-MNIST dataset",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_config_arguments(train)
    train.add_argument("--out", default="runs/default", help="run directory")
    train.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        help="continue from OUT/checkpoints/last.ckpt (or a given .ckpt)",
    )
    train.add_argument("--overwrite", action="store_true", help="delete an earlier run in OUT and start again")
    train.set_defaults(func=_cmd_train)

    def data_args(p, with_files: bool) -> None:
        p.add_argument("checkpoint", help="model.safetensors or a .ckpt written by stnkit train")
        p.add_argument("--dataset", default=None, help="dataset recipe (default: the one the model was trained on)")
        p.add_argument("--split", default="test", choices=("train", "test"))
        p.add_argument(
            "--seed", type=int, default=None, help="distortion seed (default: the training config's test seed)"
        )
        p.add_argument("--data-dir", default=None, help="full-MNIST directory (default: as trained)")
        if with_files:
            p.add_argument(
                "--images", default=None, help="IDX images file (already distorted unless --dataset is given)"
            )
            p.add_argument("--labels", default=None, help="IDX labels file")

    ev = sub.add_parser("eval", help="error %%, per-class errors and confusion matrix of a trained model")
    data_args(ev, with_files=True)
    ev.add_argument(
        "--out", default=None, help="directory for eval.json and confusion.png (default: eval/ beside the checkpoint)"
    )
    ev.set_defaults(func=_cmd_eval)

    show = sub.add_parser("show", help="draw what the transformer does to a batch")
    data_args(show, with_files=False)
    show.add_argument("--n", type=int, default=8, help="number of samples")
    show.add_argument("--out", default=None, help="output PNG (default: show/show.png beside the checkpoint)")
    show.set_defaults(func=_cmd_show)

    pred = sub.add_parser("predict", help="classify PNG images")
    pred.add_argument("checkpoint")
    pred.add_argument("images", nargs="+", help="PNG files (white digit on black, resized to the model's input)")
    pred.add_argument("--invert", action="store_true", help="invert images (for a dark digit on a light background)")
    pred.set_defaults(func=_cmd_predict)

    summ = sub.add_parser("summarize", help="markdown table of finished training runs")
    summ.add_argument("runs", nargs="+", help="run directories (with results.json)")
    summ.add_argument("--out", default=None, help="also write the table to this file")
    summ.set_defaults(func=_cmd_summarize)

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
        choices=("table1", "budget", "icstn", "sequence", "colocalization", "addition"),
        help="table1: distorted MNIST (R, RTS, P, E) and cluttered MNIST (TC); "
        "budget: CNN, ST-CNN and the PyTorch tutorial's networks for --minutes each on --dataset, "
        "from `stnkit train`'s defaults; "
        "icstn: CNN, ST-CNN and IC-STN with 1, 2, 4 steps on perturbed MNIST (Lin and Lucey 2017); "
        "sequence: CNN, ST-CNN and RNN-SPN on cluttered 3-digit sequences (Sonderby et al. 2015); "
        "colocalization: the appendix's co-localisation of digits on 84x84 canvases (--kinds, --classes); "
        "addition: MNIST addition (FCN, CNN, ST-FCN, 2xST-FCN; appendix A.1)",
    )
    rep.add_argument("--kinds", default="plain,cluttered", help="colocalization: canvases, plain and/or cluttered")
    rep.add_argument("--classes", default="0,1,2,3,4,5,6,7,8,9", help="colocalization: digit classes")
    rep.add_argument("--coloc-epochs", type=int, default=30, help="colocalization: epochs per problem")
    rep.add_argument(
        "--coloc-descriptor",
        default="concat",
        help="colocalization: e(), concat (the paper: hidden layers + logits), concat_l2, logits_l2 or softmax",
    )
    rep.add_argument(
        "--coloc-rand-patch", default="fixed", help="colocalization: I^rand, fixed (28x28) or same (the crop's scale)"
    )
    rep.add_argument(
        "--coloc-init-scale", type=float, default=1.0, help="colocalization: start window scale (1 = identity)"
    )
    rep.add_argument("--minutes", type=float, default=10.0, help="budget: minutes of fit per run")
    rep.add_argument("--dataset", default="rts", help="budget: the dataset")
    rep.add_argument("--out", default="results", help="results directory")
    rep.add_argument("--check", action="store_true", help="only verify that README and table1.md match table1.json")
    rep.add_argument("--readme", default="README.md", help="README holding the table block")
    rep.add_argument("--update-readme", action="store_true", help="write the table into the README's table block")
    rep.add_argument(
        "--datasets", default=None, help=f"table1: comma-separated datasets (default: {','.join(TABLE1_DATASETS)})"
    )
    rep.add_argument(
        "--models",
        default=None,
        help=f"comma-separated table rows (table1: model-family, default {','.join(ROWS)}; "
        "budget: cnn, st-cnn, tutorial-cnn, tutorial-stn; icstn: cnn, st-cnn-projective, ic-stn-1, ic-stn-2, ic-stn-4; sequence: seq-cnn, seq-st-cnn, rnn-spn; addition: fcn, cnn, st-fcn, 2xst-fcn; default all)",
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
