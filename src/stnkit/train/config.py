"""Training configuration: one flat, JSON-serialisable record of every choice."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import asdict, dataclass, fields

from .._checks import check_choice, check_int, check_number
from ..data import DATASETS
from ..geometry import FIELD_TRANSFORMS, TRANSFORMS
from ..models import MODEL_RECIPES, MODELS
from ..nn.similarity import SIMILARITIES

# options added after the first release, with the value that runs recorded without them used
_BEFORE_THE_OPTION = {"loc_downsample": 1, "compile": False, "tps_grid_size": 4, "on_nonfinite": "stop", "ic_steps": 4}
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "step", "none")
ON_NONFINITE = ("stop", "skip")


# a batch beyond this is a typo, not a request (it would need gigabytes per step): refused up front
MAX_BATCH_SIZE = 1 << 16
# the largest side of your images after --image-size (a typo beyond it would allocate gigabytes)
MAX_IMAGE_SIDE = 8192
# the distorted-MNIST recipes that apply to your own images (stnkit.data.folder)
DISTORT_RECIPES = ("r", "rts", "p", "e")
# the paper's most is 4 in parallel; thousands would hang building them, each a localisation net
MAX_TRANSFORMERS = 64
# more data loader processes than this is a typo (each is a process with its own copy of the dataset)
MAX_WORKERS = 64
# a run longer than this is a typo (and 1e308 minutes overflows the timers)
MAX_EPOCHS = 1_000_000
MAX_MINUTES = 1_000_000.0
# a TPS of more control points per side is a typo (64 x 64 is 4,096 points); the FCN's widest layer
MAX_TPS_GRID_SIZE = 64
MAX_HIDDEN = 1 << 16
# the IC-STN paper used up to 4; beyond a few dozen every step costs a localisation pass for nothing
MAX_IC_STEPS = 64
# 2**16 px patches are far beyond any homography patch (128 px: 8 levels reach 1 px)
MAX_PHOTOMETRIC_LEVELS = 16


@dataclass
class TrainConfig:
    """Everything that defines a training run; stored in every checkpoint.

    Defaults train the ST-CNN on ``rts`` from the bundled digits in about ten
    minutes on two CPU cores.

    Names that differ from the modules they configure: ``st_size`` is the
    transformers' ``out_size`` (:class:`~stnkit.nn.SpatialTransformer`), ``transform``
    their family (:func:`~stnkit.geometry.get_transform`).

    Every option is checked when a config is made (directly, by :meth:`replace`,
    :meth:`from_dict` or the command line): a bad one raises ``TypeError`` or
    ``ValueError`` naming the option, what it must be and what it got.

    >>> TrainConfig(optimizer="adam")
    Traceback (most recent call last):
    ...
    ValueError: optimizer must be one of 'adamw', 'sgd', got 'adam'
    """

    # data
    dataset: str = "rts"
    data_dir: str | None = None
    # your own images: an image folder (a subfolder per class; train/, val/, test/ when present)
    # or a CSV manifest (path,label); dataset, data_dir and the digit options are then not read
    data: str | None = None
    image_size: tuple[int, int] | None = None  # (H, W) of your images after resizing (stnkit.data.folder)
    distort: str | None = None  # your images distorted on the fly by a distorted-MNIST recipe: r, rts, p, e
    val_size: int = 500  # digits carved from the training split for model selection
    train_size: int | None = None  # use only the first N training digits (None: all)
    test_size: int | None = None
    test_seed: int = 0
    # the side of the registration datasets' squares or cubes (shapes2d, shapes3d; None: 128 and 64)
    volume_size: int | None = None
    # model
    model: str = "st-cnn"
    # the classifier of cnn and st-cnn: cnn (the paper's), resnet18, resnet34, or package.module:callable
    backbone: str = "cnn"
    transform: str = "affine"
    num_transformers: int = 1
    # the transformers' output size: SpatialTransformer's out_size (models.create's st_size);
    # None keeps the input size, smaller downsamples before the classifier
    st_size: int | None = None
    bounded: bool = False
    # the localisation nets see the input averaged over N x N blocks: at an equal budget on RTS
    # the cheaper transformer trains more epochs and ends lower (docs/experiments/recipe.md)
    loc_downsample: int = 2
    dropout: float = 0.0
    hidden: int | None = None  # the FCN's hidden width (None: matched to the CNN's parameter count)
    tps_grid_size: int = 4  # control points per side of the transformers' TPS (transform "tps"; models.create's)
    ic_steps: int = 4  # model "ic-stn": recurrent warps of the inverse compositional transformer
    # model "fieldnet" (registration; its field is --transform dense or velocity): an affine transformer first
    pre_affine: bool = False
    # the registration objective: similarity(moving warped, fixed) (SIMILARITIES: mse, ncc, mi)
    # + smoothness_weight * the field's smoothness (in voxels) + dice_weight * Dice loss of the labels
    similarity: str = "ncc"
    smoothness_weight: float = 1.0
    dice_weight: float = 0.0
    # model "homography-unsup": its photometric loss averaged over a pyramid of N levels (1: full resolution only)
    photometric_levels: int = 1
    # model "homography-unsup": each patch standardised (its mean and standard deviation) in the photometric loss
    photometric_standardize: bool = False
    # optimisation
    epochs: int = 30
    # at a fixed number of epochs smaller batches (more steps) train better on CPU at about the
    # same cost: TC ST-CNN validation 13.5 % (128) -> 9.6 % (64) (docs/experiments/recipe.md)
    batch_size: int = 64
    optimizer: str = "adamw"  # or "sgd" (OPTIMIZERS)
    lr: float = 1e-3
    # learning-rate multiplier of the localisation nets: at 0.1 the TC transformer barely leaves
    # the identity (validation 19.7 % vs 13.5 % at 1.0; docs/experiments/recipe.md)
    loc_lr_mult: float = 1.0
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "cosine"  # "cosine", "step" or "none" (SCHEDULES)
    step_epochs: int = 10  # "step": divide the learning rate by 10 every step_epochs
    grad_clip: float | None = None
    consistency_weight: float = 0.0
    # weight of a penalty on the transformers' sampling points outside the input (0: off)
    coverage_weight: float = 0.0
    consistency_strength: float = 1.0
    patience: int | None = None
    compile: bool = False  # torch.compile the model's parts (in place: checkpoints are unchanged)
    max_time: float | None = None  # minutes: the epochs (and schedule) are fitted to this budget, then a hard stop
    # a NaN or inf loss or gradient: "stop" training (naming the step) or "skip" the step;
    # parameters that become non-finite stop it either way (ON_NONFINITE)
    on_nonfinite: str = "stop"
    # run
    seed: int = 0
    deterministic: bool = False
    num_workers: int = 0
    accelerator: str = "auto"
    devices: str = "1"
    num_nodes: int = 1
    strategy: str = "auto"
    # Lightning's limits: an int is a number of batches, a float a fraction
    limit_train_batches: int | float | None = None
    limit_val_batches: int | float | None = None

    def __post_init__(self) -> None:
        # each option on its own; which options a model ignores is the command line's concern
        # (options_unused_by), so that configs can be built up step by step (for_model, replace)
        check_choice("dataset", self.dataset, DATASETS)
        if self.data_dir is not None:
            if not isinstance(self.data_dir, (str, os.PathLike)):
                raise TypeError(f"data_dir must be a directory path or None, got {type(self.data_dir).__name__}")
            self.data_dir = os.fspath(self.data_dir)  # JSON-serialisable
        if self.data is not None:
            if not isinstance(self.data, (str, os.PathLike)) or not os.fspath(self.data):
                raise TypeError(f"data must be an image folder or a .csv path, got {self.data!r}")
            self.data = os.fspath(self.data)
        if self.image_size is not None:
            if not isinstance(self.image_size, (list, tuple)) or len(self.image_size) != 2:
                raise ValueError(f"image_size must be two ints (H W), got {self.image_size!r}")
            self.image_size = tuple(check_int("image_size", s, high=MAX_IMAGE_SIDE) for s in self.image_size)
        if self.distort is not None:
            check_choice("distort", self.distort, DISTORT_RECIPES)
        if not isinstance(self.backbone, str) or not self.backbone:
            raise TypeError(f"backbone must be a name or package.module:callable, got {self.backbone!r}")
        check_int("val_size", self.val_size)
        _optional(check_int, "train_size", self.train_size)
        _optional(check_int, "test_size", self.test_size)
        check_int("test_seed", self.test_seed, low=0)
        check_choice("model", self.model, MODELS)
        check_choice("transform", self.transform, tuple(TRANSFORMS) + tuple(FIELD_TRANSFORMS))
        _optional(check_int, "volume_size", self.volume_size, low=8, high=MAX_IMAGE_SIDE)
        check_choice("similarity", self.similarity, tuple(SIMILARITIES))
        check_int("num_transformers", self.num_transformers, high=MAX_TRANSFORMERS)
        _optional(check_int, "st_size", self.st_size, high=MAX_IMAGE_SIDE)
        check_int("loc_downsample", self.loc_downsample, high=MAX_IMAGE_SIDE)
        if check_number("dropout", self.dropout, low=0.0, high=1.0) == 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        _optional(check_int, "hidden", self.hidden, high=MAX_HIDDEN)
        check_int("tps_grid_size", self.tps_grid_size, low=2, high=MAX_TPS_GRID_SIZE)
        check_int("ic_steps", self.ic_steps, high=MAX_IC_STEPS)
        check_int("photometric_levels", self.photometric_levels, high=MAX_PHOTOMETRIC_LEVELS)
        check_int("epochs", self.epochs, high=MAX_EPOCHS)
        check_int("batch_size", self.batch_size, high=MAX_BATCH_SIZE)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        for name in (
            "lr",
            "loc_lr_mult",
            "momentum",
            "weight_decay",
            "consistency_weight",
            "consistency_strength",
            "coverage_weight",
            "smoothness_weight",
            "dice_weight",
        ):
            check_number(name, getattr(self, name), low=0.0)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("on_nonfinite", self.on_nonfinite, ON_NONFINITE)
        check_int("step_epochs", self.step_epochs)
        _optional(check_number, "grad_clip", self.grad_clip, low=0.0)
        _optional(check_int, "patience", self.patience, low=0)
        if _optional(check_number, "max_time", self.max_time, low=0.0, high=MAX_MINUTES) == 0.0:
            raise ValueError(f"max_time must be > 0 (minutes), got {self.max_time!r}")
        check_int("seed", self.seed, low=0)
        check_int("num_workers", self.num_workers, low=0, high=MAX_WORKERS)
        check_int("num_nodes", self.num_nodes)
        for name in ("limit_train_batches", "limit_val_batches"):
            value = getattr(self, name)
            if value is not None and check_number(name, value, low=0.0) == 0 and name == "limit_train_batches":
                raise ValueError(f"{name} must be > 0 (a number of batches, or a fraction in (0, 1]), got {value!r}")
            if isinstance(value, float) and value > 1.0:
                raise ValueError(f"{name} must be an int (batches) or a fraction in (0, 1], got {value!r}")
        for names, kind in (
            (("bounded", "compile", "deterministic", "pre_affine", "photometric_standardize"), bool),
            (("accelerator", "devices", "strategy"), str),
        ):
            for name in names:
                value = getattr(self, name)
                if not isinstance(value, kind):
                    raise TypeError(f"{name} must be a {kind.__name__}, got {type(value).__name__} {value!r}")
        if self.deterministic and self.max_time is not None:
            raise ValueError(
                "deterministic cannot be combined with max_time: the epochs would be fitted to the "
                "measured speed, so two runs could differ; give epochs instead"
            )

    @classmethod
    def for_model(cls, model: str, base: TrainConfig | None = None, **options) -> TrainConfig:
        """``base`` (default: the defaults) with ``model``'s own recipe (:data:`MODEL_RECIPES`), then ``options``."""
        base = base or cls()
        return base.replace(model=model, **MODEL_RECIPES.get(model, {})).replace(**options)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown training options: {', '.join(sorted(unknown))}")
        # a record written before an option existed ran with that option's original value
        return cls(**{**_BEFORE_THE_OPTION, **data})

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)


def _optional(check, name: str, value, **bounds):
    """``check(name, value, **bounds)`` unless ``value`` is ``None`` (the option's "not set")."""
    return None if value is None else check(name, value, **bounds)


def as_flags(options: dict) -> list[str]:
    """``{"batch_size": 32, "bounded": True}`` as the command line says it:
    ``["--batch-size 32", "--bounded"]`` (``False`` as ``--no-NAME``)."""
    out = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            out.append(flag if value else "--no-" + flag[2:])
        else:
            out.append(f"{flag} {value}")
    return out
