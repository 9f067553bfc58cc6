"""``stnkit train``, ``eval``, ``show`` and ``predict``."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import typing
from dataclasses import fields
from pathlib import Path

from ..data import dataset_info
from ..models import MODEL_OPTIONS, MODEL_RECIPES, REGISTRY, model_spec, options_unused_by, row_key
from ..train.config import TrainConfig

_HELP = {
    "dataset": "distorted-MNIST dataset: mnist, r, rts, p, e, tc, perturbed; addition, sequence; "
    "registration pairs (--model fieldnet): shapes2d, shapes3d",
    "volume_size": "shapes2d / shapes3d: the side of each square image / cubic volume (default 128 / 64)",
    "pre_affine": "with --model fieldnet: an affine transformer before the field",
    "similarity": "with --model fieldnet: the similarity of the warped moving and the fixed image: "
    "ncc (local normalised cross-correlation, 9-voxel windows), mse or mi (mutual information)",
    "smoothness_weight": "with --model fieldnet: weight of the field's smoothness (mean squared gradient, voxels)",
    "dice_weight": "with --model fieldnet: weight of an auxiliary Dice loss of the warped labels (0: no labels used)",
    "data_dir": "directory with the four full-MNIST IDX files (default: the bundled 8k digits)",
    "val_size": "training digits held out for validation (model selection, early stopping)",
    "train_size": "use only the first N training digits",
    "test_size": "evaluate on only the first N test digits",
    "test_seed": "seed of the fixed test distortions",
    "model": "; ".join(f"{s.name}: {s.summary}" for s in REGISTRY.values()),
    "data": "your own images: a folder with a subfolder per class (train/, val/, test/ when present, "
    "otherwise a seeded 80/10/10 split per class) or a CSV manifest with path,label columns; PNG or JPEG, "
    "grey or RGB (instead of --dataset)",
    "image_size": "with --data: resize every image to H W (the whole image, antialiased, aspect not kept); "
    "default: the images' own size, or their median size when they differ (said in one line)",
    "distort": "with --data: distort your images on the fly with a distorted-MNIST recipe (r, rts, p, e), "
    "seeded: a new draw per training epoch, one fixed draw for validation and test",
    "backbone": "the classifier of cnn and st-cnn: cnn (the paper's), resnet18, resnet34, or "
    "package.module:callable, a factory of your own called with in_channels=, in_size=, num_classes=",
    "coverage_weight": "weight of a penalty on the transformers' sampling points outside the input "
    "(against a transformer that zooms out past the image; 0: off)",
    "transform": "the transformers' family: translation, attention, similarity, affine, projective, tps; "
    "fieldnet's field: velocity or dense",
    "num_transformers": "transformers in parallel (2 or 4 for the paper's 2x/4x ST-CNN)",
    "st_size": "the transformers' output size (SpatialTransformer's out_size; smaller downsamples)",
    "loc_downsample": "the localisation nets see the input averaged over N x N blocks (1: full resolution)",
    "bounded": "squash transformer parameters into a safe range (tanh)",
    "dropout": "dropout before the classifier's last layer",
    "hidden": "the FCN classifier's hidden width (default: matched to the CNN's parameter count on the same input)",
    "tps_grid_size": "with --transform tps: control points per side of the thin-plate spline's grid",
    "ic_steps": "with --model ic-stn: recurrent warps of the inverse compositional transformer",
    "photometric_levels": "with --model homography-unsup: the photometric loss averaged over a pyramid of N "
    "levels (2x average pooling from one to the next; 1: full resolution only)",
    "photometric_standardize": "with --model homography-unsup: standardise each patch (its own mean and standard "
    "deviation) in the photometric loss",
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
    if typing.get_origin(kind) is tuple and len(set(typing.get_args(kind))) == 1:
        return kind  # tuple[int, int]: nargs=2 of int
    raise TypeError(f"TrainConfig.{name}: no command-line type for {hint}")


class _Default:
    """An option's default, told apart from the same value given on the command line."""

    def __init__(self, value):
        self.value = value

    def __str__(self) -> str:
        return str(self.value)


def add_config_arguments(parser: argparse.ArgumentParser, defaults: TrainConfig | None = None, exclude=()) -> None:
    """One ``--option`` per :class:`TrainConfig` field (``--num-transformers`` for ``num_transformers``)."""

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
        if typing.get_origin(kind) is tuple:
            items = typing.get_args(kind)
            metavar = ("H", "W") if f.name.endswith("size") and len(items) == 2 else None
            parser.add_argument(flag, type=items[0], nargs=len(items), metavar=metavar, default=default, help=help_text)
        elif kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        else:
            parser.add_argument(flag, type=kind, default=default, help=help_text)


def _int_or_float(text: str) -> int | float:
    """Lightning's limits: an int is a number of batches, a float a fraction."""
    value = float(text)
    return int(value) if value.is_integer() and "." not in text else value


def given_options(args: argparse.Namespace) -> dict:
    """The training options written on the command line (not left at their defaults), and
    those of its ``--config`` file once :func:`config_from_args` has read it."""
    if hasattr(args, "_file_options"):
        return dict(args._file_options)
    return {
        f.name: getattr(args, f.name)
        for f in fields(TrainConfig)
        if hasattr(args, f.name) and not isinstance(getattr(args, f.name), _Default)
    }


def _grid_options(args: argparse.Namespace) -> dict:
    """The options given to ``stnkit reproduce``: applied to every run, which sets its own model, data and seed."""
    return {k: v for k, v in given_options(args).items() if k not in ("model", "dataset", "seed")}


# a --config file is a few hundred bytes; a larger one is not a config
MAX_CONFIG_BYTES = 1 << 20


def read_config_file(path) -> dict:
    """The options of a ``--config`` YAML (or JSON) file: a mapping of option names (``lr`` or
    ``--lr`` spelling) to values, as ``OUT/config.yaml`` of every run holds them. Options at
    their default are dropped (they are not "given"). A one-line ValueError for anything else."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--config {path} is not a file")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ValueError(f"--config {path} is {path.stat().st_size:,} bytes, more than a config ({MAX_CONFIG_BYTES:,})")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ValueError(f"--config {path} is not YAML ({' '.join(str(err).split())[:120]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"--config {path} must map option names to values, got {type(data).__name__}")
    names = {f.name for f in fields(TrainConfig)}
    options = {}
    for key, value in data.items():
        name = str(key).lstrip("-").replace("-", "_")
        if name not in names:
            raise ValueError(f"--config {path}: unknown option {key!r}")
        options[name] = tuple(value) if name == "image_size" and isinstance(value, list) else value
    defaults = TrainConfig()
    return {k: v for k, v in options.items() if k == "model" or v != getattr(defaults, k)}


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The defaults, then the chosen model's own recipe, then the ``--config`` file's options,
    then the options given on the command line.

    An option :class:`TrainConfig` refuses ends the command with a one-line error.
    """
    defaults = getattr(args, "_config_defaults", TrainConfig())
    given = given_options(args)
    if getattr(args, "config", None):
        with option_errors():
            given = {**read_config_file(args.config), **given}
        args._file_options = given
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
    from ..train.checkpoint import checkpoint_config
    from ..train.resume import resume_checkpoint
    from ..train.run import check_devices, read_run_config, train
    from ..train.safety import NonFiniteError, TrainingInterrupted

    if not args.out:
        raise SystemExit("stnkit: --out must name a run directory, got an empty string")

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
        elif (Path(args.out) / "config.yaml").is_file():
            # stopped before its first checkpoint: the options it started with, from its config.yaml
            with option_errors():
                config = read_run_config(Path(args.out) / "config.yaml").replace(**given_options(args))
    _validate(config, given_options(args))
    check_options_read(config, given_options(args))
    check_devices(config)
    try:
        results = train(config, args.out, resume=resume, overwrite=args.overwrite, quiet=args.quiet)
    except TrainingInterrupted as stop:
        print(f"stnkit: {stop}", file=sys.stderr)
        return 130  # the shell's status for a Ctrl-C
    except NonFiniteError as err:
        raise SystemExit(f"stnkit: {err}") from None
    if results:
        if config.data is not None and results["test_size"] == 0:
            print(f"test error: none: {config.data} has no test images ({len(results['classes'])} classes)")
        elif config.data is not None:
            print(
                f"test error: {results['test_error']:.2f}% ({results['test_size']} test images of {config.data}, "
                f"{len(results['classes'])} classes)"
            )
        elif "test" in results:  # a registration network
            t = results["test"]
            print(
                f"test: Dice {t['dice_before']:.3f} -> {t['dice']:.3f}, folding {t['folding']:.3f} %, "
                f"end-point error {t['epe']:.2f} voxels, {t['seconds_per_pair']:.3f} s per pair "
                f"({t['n']} {config.dataset} test pairs)"
            )
        elif "error_unit" in results:  # a task of its own (homography: mean corner error)
            print(
                f"test error: {results['test_error']:.2f} {results['error_unit']} "
                f"({results['test_size']} {config.dataset} test samples)"
            )
        else:
            print(f"test error: {results['test_error']:.2f}% ({results['test_size']} {config.dataset} test digits)")
        print(f"parameters: {results['num_parameters']:,} ({config.model}); epochs: {results['epochs']}")
        if "pose_spread" in results:
            pr = results["pose_spread"]
            print(
                f"pose spread: {pr['spread_st_px']:.2f} px with the transformer, {pr['spread_identity_px']:.2f} px without"
            )
        shown = "" if "error_unit" in results else f"{Path(args.out) / 'show.png'}, "
        print(f"wrote {Path(args.out) / 'results.json'}, {shown}{Path(args.out) / 'model.safetensors'}")
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
    for name, what in (("photometric_levels", "pyramid"), ("photometric_standardize", "standardisation")):
        if is_set(name) and name in unused:
            raise SystemExit(
                f"stnkit: --{name.replace('_', '-')} sets the photometric loss's {what}: --model must be "
                f"homography-unsup, got {config.model!r}"
            )
    registration = model_spec(config.model).task == "registration"
    if registration != (config.transform in ("dense", "velocity")):
        want = "dense or velocity" if registration else "a transformer family, not a field"
        raise SystemExit(f"stnkit: --transform must be {want} for --model {config.model}, got {config.transform!r}")
    if config.data is None and registration != (dataset_info(config.dataset).task == "registration"):
        raise SystemExit(
            f"stnkit: --model {config.model} learns {model_spec(config.model).task}: --dataset {config.dataset} "
            f"is a {dataset_info(config.dataset).task} dataset" + (" (shapes2d, shapes3d)" if registration else "")
        )
    if registration and config.data is not None:
        raise SystemExit(
            f"stnkit: --model {config.model} trains on registration pairs (--dataset shapes2d or shapes3d)"
        )
    if is_set("volume_size") and (config.data is not None or dataset_info(config.dataset).task != "registration"):
        raise SystemExit(
            "stnkit: --volume-size sets the registration datasets' size: --dataset must be shapes2d or shapes3d"
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


# options of the distorted-MNIST digits, not read on your own images (--data), and the reverse
_DIGIT_OPTIONS = ("dataset", "data_dir", "val_size", "train_size", "test_size")
_IMAGE_OPTIONS = ("image_size", "distort")


def check_options_read(config: TrainConfig, given) -> None:
    """Refuse, in one line, an option given (on the command line or in ``--config``) that the run
    would not read: a model-specific option its model does not read (the model registry,
    :data:`~stnkit.models.REGISTRY`), a digit option with ``--data``, an image option without it."""

    def flag(name: str) -> str:
        return "--" + name.replace("_", "-")

    unused = options_unused_by(config.model, config.transform)
    for name in sorted(given):
        if name in unused:
            reads = sorted(model_spec(config.model).options) or ["none of the model-specific options"]
            raise SystemExit(
                f"stnkit: {flag(name)} is not read by --model {config.model} "
                f"(it reads {', '.join(flag(r) if r in MODEL_OPTIONS else r for r in reads)})"
            )
        if config.data is not None and name in _DIGIT_OPTIONS:
            raise SystemExit(
                f"stnkit: {flag(name)} is for the distorted-MNIST digits, not read with --data {config.data}"
            )
        if config.data is None and name in _IMAGE_OPTIONS:
            raise SystemExit(f"stnkit: {flag(name)} is for your own images: it needs --data DIR")
    if config.backbone != "cnn":
        from ..models import load_backbone

        with option_errors():
            load_backbone(config.backbone)


def _cmd_eval(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from .._io import atomic_write_text
    from ..data import dataset_info
    from ..train.checkpoint import load_run
    from ..train.evaluate import check_input_size, confusion_png, evaluate, load_test_set

    model, config, info = load_run(args.checkpoint)
    if model_spec(config.model).task == "registration":
        return _eval_registration(args, model, config)
    if info is not None or args.data is not None:
        return _eval_images(args, model, config, info)
    if args.split == "val":
        raise ValueError("--split val is for models trained on your own images (--data); digits: train or test")
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


def _eval_registration(args: argparse.Namespace, model, config: TrainConfig) -> int:
    """``stnkit eval`` of a registration network: its measures on the test pairs of its dataset."""
    from ..train.evaluate import evaluate_registration, load_test_set

    for name in ("data", "images", "labels"):
        if getattr(args, name, None) is not None:
            raise ValueError(
                f"--{name}: {args.checkpoint} registers {config.dataset} pairs (give --dataset and --seed)"
            )
    if args.split != "test":
        raise ValueError(
            f"--split: {args.checkpoint} is evaluated on the test pairs of {config.dataset}, drawn by --seed"
        )
    if args.dataset is not None and args.dataset != config.dataset:
        raise ValueError(f"--dataset: {args.checkpoint} registers {config.dataset} pairs, got {args.dataset!r}")
    ds = load_test_set(config, seed=args.seed)
    t = evaluate_registration(model, ds, dataset_info(config.dataset).num_classes, batch_size=config.batch_size)
    print(
        f"{config.model} on {t['n']} {config.dataset} test pairs: Dice {t['dice_before']:.3f} -> {t['dice']:.3f}, "
        f"folding {t['folding']:.3f} %, end-point error {t['epe']:.2f} voxels, {t['seconds_per_pair']:.3f} s per pair"
    )
    from .._io import atomic_write_text

    out = Path(args.checkpoint).parent / "eval" if args.out is None else Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "eval.json", json.dumps({"checkpoint": str(args.checkpoint), **t}, indent=2) + "\n")
    print(f"wrote {out / 'eval.json'}")
    return 0


def _refuse_registration(config: TrainConfig, path, command: str) -> None:
    """A registration network has no classes to show or predict: one line."""
    if model_spec(config.model).task == "registration":
        raise ValueError(
            f"stnkit {command} is for classifiers; {path} is a registration network ({config.model}): "
            "stnkit eval measures it, its training run's show.png shows a pair"
        )


def _image_split(args: argparse.Namespace, config: TrainConfig, info: dict | None):
    """The ``--split`` of ``--data`` (default: the run's own images) as the model saw its images:
    its size and channels, its distortion recipe; labels by the run's class names."""
    from ..data.folder import open_image_data

    distort = config.distort
    if info is None:  # a digit model on a folder of its canvases (stnkit data make ... --format imagefolder)
        from ..data import dataset_info

        d = dataset_info(config.dataset)
        if d.num_labels != 1:
            raise ValueError(f"--data: {args.checkpoint} reads digit sequences ({config.dataset}), not an image folder")
        info = {"classes": [str(c) for c in range(d.num_classes)], "in_channels": d.in_channels}
        info["image_size"] = [d.canvas_size, d.canvas_size]
        distort = None  # the folder holds the distorted canvases themselves
    source = args.data or config.data
    if args.data is None and getattr(args, "dataset", None) is not None:
        raise ValueError(f"{args.checkpoint} was trained on your own images ({config.data}): use --data, not --dataset")
    data = open_image_data(
        source,
        image_size=tuple(info["image_size"]),
        channels=info["in_channels"],
        seed=config.seed,
        distort=distort,
        test_seed=config.test_seed if args.seed is None else args.seed,
    )
    ds = {"train": data.train, "val": data.val, "test": data.test}[args.split]
    if len(ds) == 0:
        raise ValueError(f"--data {source} has no {args.split} images")
    unknown = sorted(set(data.classes) - set(info["classes"]))
    if unknown:
        raise ValueError(
            f"--data {source} has classes the model does not know: {', '.join(unknown[:5])} "
            f"(it knows {', '.join(info['classes'][:10])}{', ...' if len(info['classes']) > 10 else ''})"
        )
    if tuple(data.classes) != tuple(info["classes"]):  # a subset of the classes: labels by name
        index = {c: i for i, c in enumerate(info["classes"])}
        ds = _Relabelled(ds, [index[c] for c in data.classes])
    return ds, f"{source} {args.split}", info


class _Relabelled:
    """A dataset whose labels are mapped through ``mapping`` (``label -> mapping[label]``)."""

    def __init__(self, dataset, mapping):
        self.dataset, self.mapping = dataset, mapping

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i):
        import torch

        x, y = self.dataset[i]
        return x, torch.tensor(self.mapping[int(y)])


def _eval_images(args: argparse.Namespace, model, config: TrainConfig, info: dict | None) -> int:
    from .._io import atomic_write_text
    from ..train.evaluate import confusion_png, evaluate_dataset

    ds, source, info = _image_split(args, config, info)
    result = evaluate_dataset(model, ds, num_classes=len(info["classes"]), batch_size=config.batch_size)
    result.update({"checkpoint": str(args.checkpoint), "data": source, "classes": info["classes"]})
    print(f"error: {result['error']:.2f}% on {result['n']} images ({source})")
    per_class = {info["classes"][int(k)]: v for k, v in result["per_class_error"].items() if v is not None}
    print("per-class error %: " + ", ".join(f"{k}: {v}" for k, v in per_class.items()))
    out = Path(args.checkpoint).parent / "eval" if args.out is None else Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "eval.json", json.dumps(result, indent=2) + "\n")
    confusion_png(
        result["confusion"],
        out / "confusion.png",
        f"{config.model} on {source}: {result['error']:.2f}% error",
        classes=info["classes"],
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


def _check_png_out(out: Path) -> None:
    if out.is_dir() or out.suffix.lower() != ".png":
        raise ValueError(f"--out must be a .png file path, got {out}{' (a directory)' if out.is_dir() else ''}")


def _cmd_show(args: argparse.Namespace) -> int:
    from ..train.checkpoint import load_run
    from ..train.evaluate import check_input_size, load_test_set, pose_spread
    from ..train.show import show_figure

    if not 1 <= args.n <= 64:
        raise ValueError(f"--n must be an int in [1, 64] (samples drawn), got {args.n}")
    model, config, info = load_run(args.checkpoint)
    _refuse_registration(config, args.checkpoint, "show")
    if info is not None or args.data is not None:
        from torch.utils.data import default_collate

        ds, source, info = _image_split(args, config, info)
        images, labels = default_collate([ds[i] for i in range(min(args.n, len(ds)))])
        out = Path(args.checkpoint).parent / "show" / "show.png" if args.out is None else Path(args.out)
        _check_png_out(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        title = f"{row_key(config.model, config.transform)} on {source}"
        show_figure(model, images, labels, out, title, n=args.n, classes=info["classes"])
        print(f"wrote {out}")
        return 0
    if args.split == "val":
        raise ValueError("--split val is for models trained on your own images (--data); digits: train or test")
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
    _check_png_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    show_figure(model, images, labels, out, title, n=args.n)
    print(f"wrote {out}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from ..data import dataset_info, fit_to_canvas, read_grey_png
    from ..train.checkpoint import load_run

    model, config, info = load_run(args.checkpoint)
    _refuse_registration(config, args.checkpoint, "predict")
    if info is not None:
        return _predict_images(args, model, info)
    canvas = dataset_info(config.dataset).canvas_size
    # every image read (and refused) before any answer is printed
    # transparency composited onto the paper: black for white-on-black digits, white for --invert's dark ink
    background = "white" if args.invert else "black"
    batch = [
        (path, fit_to_canvas(read_grey_png(path, background=background), canvas, invert=args.invert))
        for path in args.images
    ]
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


def _predict_images(args: argparse.Namespace, model, info: dict) -> int:
    """``stnkit predict`` for a model trained on your own images: each image read as training read
    them (alpha onto white, the run's channels and size), the top classes by name."""
    import torch

    from ..data.folder import convert_channels, read_image, resize_image

    if args.invert:
        raise ValueError("--invert is for digit models; a model trained on your own images reads them as they are")
    size = tuple(info["image_size"])
    # every image read (and refused) before any answer is printed
    batch = [(p, resize_image(convert_channels(read_image(p), info["in_channels"]), size)) for p in args.images]
    classes = info["classes"]
    for path, x in batch:
        with torch.no_grad():
            prob = torch.softmax(model(x.unsqueeze(0)), dim=1)[0]
        top = prob.argsort(descending=True)[:3].tolist()
        alts = ", ".join(f"{classes[c]}: {float(prob[c]):.3f}" for c in top)
        print(f"{path}: {classes[top[0]]} (p={float(prob[top[0]]):.3f}; top {len(top)} {alts})")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    """``stnkit export RUN --format onnx|torchscript --out FILE``."""
    import torch

    from ..data import dataset_info
    from ..export import export_model
    from ..train.checkpoint import load_run

    run = Path(args.run)
    path = run / "model.safetensors" if run.is_dir() else run
    out = Path(args.out)
    if out.is_dir():
        raise ValueError(f"--out must be a file path, got the directory {out}")
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"--out {out} exists: pass --overwrite to replace it")
    model, config, info = load_run(path)
    d = dataset_info(config.dataset)
    if info is not None:
        shape = (1, info["in_channels"], *info["image_size"])
    elif d.task == "registration":  # a (moving, fixed) pair
        shape = (1, d.in_channels, *(((config.volume_size or d.canvas_size),) * d.dims))
    else:
        shape = (1, d.in_channels, d.canvas_size, d.canvas_size)
    example = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    report = export_model(model, example, out, format=args.format, check=not args.no_check)
    line = f"wrote {out} ({args.format}{', opset ' + str(report['opset']) if report.get('opset') else ''}, input (B, "
    line += ", ".join(map(str, shape[1:])) + ") with a dynamic batch)"
    print(line)
    if report.get("max_abs_diff") is not None:
        print(
            f"checked against PyTorch on random inputs of batch sizes {report['batch_sizes_checked']}: "
            f"largest difference {report['max_abs_diff']:.3g}"
        )
    return 0


def _cmd_summarize(args: argparse.Namespace) -> int:
    from .._io import atomic_write_text
    from ..train.report import summarize

    text = summarize(args.runs)
    print(text, end="")
    if args.out:
        atomic_write_text(args.out, text)
    return 0


def add_parsers(sub) -> None:
    train = sub.add_parser(
        "train",
        help="train a model on a distorted-MNIST dataset or on your own images (--data)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_config_arguments(train)
    train.add_argument(
        "--config",
        default=None,
        help="a YAML file of options (as OUT/config.yaml of every run holds them); the command line's win",
    )
    train.add_argument("--out", default="runs/default", help="run directory")
    train.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        help="continue from OUT/checkpoints/last.ckpt (or a given .ckpt)",
    )
    train.add_argument("--overwrite", action="store_true", help="delete an earlier run in OUT and start again")
    train.add_argument(
        "--quiet", action="store_true", help="no progress (a bar on a terminal, one line per epoch in a log otherwise)"
    )
    train.set_defaults(func=_cmd_train)

    def data_args(p, with_files: bool) -> None:
        p.add_argument("checkpoint", help="model.safetensors or a .ckpt written by stnkit train")
        p.add_argument("--dataset", default=None, help="dataset recipe (default: the one the model was trained on)")
        p.add_argument(
            "--split", default="test", choices=("train", "val", "test"), help="val: your own images (--data) only"
        )
        p.add_argument(
            "--seed", type=int, default=None, help="distortion seed (default: the training config's test seed)"
        )
        p.add_argument("--data-dir", default=None, help="full-MNIST directory (default: as trained)")
        p.add_argument(
            "--data",
            default=None,
            help="a model trained on your own images: an image folder or CSV (default: as trained)",
        )
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

    pred = sub.add_parser("predict", help="classify PNG or JPEG images")
    pred.add_argument("checkpoint")
    pred.add_argument(
        "images",
        nargs="+",
        help="PNG or JPEG files (digit models: a white digit on black; all: resized to the model's input)",
    )
    pred.add_argument("--invert", action="store_true", help="invert images (for a dark digit on a light background)")
    pred.set_defaults(func=_cmd_predict)

    exp = sub.add_parser(
        "export",
        help="export a trained model to ONNX or TorchScript (dynamic batch), checked against PyTorch",
    )
    exp.add_argument("run", help="a run directory (its model.safetensors), a .safetensors or a .ckpt")
    exp.add_argument("--format", choices=("onnx", "torchscript"), default="onnx")
    exp.add_argument("--out", required=True, help="the file to write")
    exp.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    exp.add_argument("--no-check", action="store_true", help="skip the check against PyTorch (onnxruntime)")
    exp.set_defaults(func=_cmd_export)

    summ = sub.add_parser("summarize", help="markdown table of finished training runs")
    summ.add_argument("runs", nargs="+", help="run directories (with results.json)")
    summ.add_argument("--out", default=None, help="also write the table to this file")
    summ.set_defaults(func=_cmd_summarize)
