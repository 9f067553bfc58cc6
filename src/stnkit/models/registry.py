"""The one registry of the built-in models: what each is, which training options it reads, its recipe,
and the names of its rows in tables (:func:`row_key`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..geometry import TRANSFORMS


@dataclass(frozen=True)
class ModelSpec:
    """What one built-in model is, in the one registry (:data:`REGISTRY`) that the command
    line's help, its option checks and the experiment tables read.

    Attributes:
        name: ``stnkit train --model NAME``.
        summary: one line for the help text.
        options: the model-specific training options it reads (:data:`MODEL_OPTIONS`); the
            others of that set are refused when given for it.
        transformer: it has spatial transformers in front of its classifier (an :class:`STClassifier`).
        sequence: it reads several labels per sample (logits ``(B, num_labels, classes)``).
        recipe: training options of its own, applied unless given (``TrainConfig.for_model``).
        task: what it learns, the task of the datasets it trains on (:data:`~stnkit.data.tasks.TASKS`):
            ``classification``, ``registration`` (a (moving, fixed) pair to a field) or ``homography``
            (a patch pair to the four corner offsets); a dataset of another task is refused.
        loss: for a task with more than one training loss, the one this model trains with (homography:
            ``"corners"``, supervised, or ``"photometric"``, through the warp); ``None``: the task's first.
    """

    name: str
    summary: str
    options: frozenset[str]
    transformer: bool = False
    sequence: bool = False
    recipe: dict = field(default_factory=dict, compare=False)
    task: str = "classification"
    loss: str | None = None


# the training options that only some models read; every other option is read by every model
_ST = frozenset(
    {"transform", "num_transformers", "st_size", "bounded", "loc_downsample", "loc_lr_mult", "tps_grid_size"}
    | {"consistency_weight", "consistency_strength", "coverage_weight"}
)
# the options of the registration objective (stnkit.train.objectives) and of fieldnet's model
_REGISTRATION = frozenset({"transform", "pre_affine", "similarity", "smoothness_weight", "dice_weight"})
MODEL_OPTIONS = (
    _ST | _REGISTRATION | {"hidden", "ic_steps", "backbone", "photometric_levels", "photometric_standardize"}
)

# Models trained with a recipe of their own unless an option says otherwise: the
# PyTorch tutorial's network with the tutorial's recipe (plain SGD at 0.01, batch
# 64, 20 epochs, no schedule, no weight decay, one learning rate for all layers).
_TUTORIAL_RECIPE = {
    "loc_downsample": 1,
    "optimizer": "sgd",
    "lr": 0.01,
    "momentum": 0.0,
    "batch_size": 64,
    "epochs": 20,
    "schedule": "none",
    "weight_decay": 0.0,
    "loc_lr_mult": 1.0,
}
# The FCNs cost a few seconds an epoch and are far from converged after 30: on TC the
# FCN's validation error falls from 68 % (10 epochs) to 47 % (100), the ST-FCN's from 52 % to 10 %.
_FCN_EPOCHS = 100
# the homography networks (stnkit.models.homography) on the homography patches, sized for 2 CPU
# cores: 2,048 fresh pairs an epoch (train_size), 256 validation pairs, 1,000 test pairs; 8 epochs
# (an epoch took 50 to 130 s on the 2 cores shared with three other runs); chosen on the validation
# pairs, docs/experiments/homography/trials.md
_HOMOGRAPHY_RECIPE = {
    "dataset": "homography",
    "epochs": 8,
    "train_size": 2048,
    "val_size": 256,
    "batch_size": 32,
    "lr": 1e-3,
    "weight_decay": 1e-4,
    "loc_downsample": 1,
}

REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "fcn",
            "the paper's fully connected baseline (3 layers)",
            frozenset({"hidden"}),
            recipe={"epochs": _FCN_EPOCHS},
        ),
        ModelSpec("cnn", "the paper's CNN, or --backbone", frozenset({"backbone"})),
        ModelSpec(
            "st-fcn",
            "spatial transformer(s) + the FCN",
            _ST | {"hidden"},
            transformer=True,
            # not measured with a downsampled localisation input yet: the paper's net on the full input
            recipe={"epochs": _FCN_EPOCHS, "loc_downsample": 1},
        ),
        ModelSpec("st-cnn", "spatial transformer(s) + the CNN, or --backbone", _ST | {"backbone"}, transformer=True),
        ModelSpec("tutorial-cnn", "the PyTorch tutorial's classifier", frozenset(), recipe=_TUTORIAL_RECIPE),
        ModelSpec(
            "tutorial-stn",
            "the PyTorch tutorial's STN (its network and recipe)",
            _ST - {"num_transformers"},
            transformer=True,
            recipe=_TUTORIAL_RECIPE,
        ),
        ModelSpec(
            "ic-stn",
            "inverse compositional STN (Lin and Lucey 2017)",
            _ST - {"num_transformers", "tps_grid_size"} | {"ic_steps"},
            transformer=True,
            # the IC-STN paper's warps are homographies (its perturbed MNIST)
            recipe={"transform": "projective"},
        ),
        # the digit-sequence models (stnkit.models.sequence): logits (B, num_labels, num_classes)
        ModelSpec("seq-cnn", "digit sequences: a CNN with one head per digit", frozenset(), sequence=True),
        ModelSpec(
            "seq-st-cnn",
            "digit sequences: one affine transformer + the sequence CNN",
            _ST - {"num_transformers", "tps_grid_size", "bounded"},
            transformer=True,
            sequence=True,
        ),
        # RecurrentSPN is not an STClassifier: its localisation net shares the learning rate
        ModelSpec(
            "rnn-spn",
            "digit sequences: recurrent spatial transformer (Sonderby et al. 2015)",
            frozenset({"transform", "st_size", "loc_downsample"}),
            sequence=True,
        ),
        # learned registration (stnkit.models.registration): a (moving, fixed) pair to a field, no classifier.
        # sizes count pairs of the registration datasets; AdamW at 1e-3 without decay or schedule (VoxelMorph
        # trains Adam at 1e-4 for far more steps than a CPU run can)
        ModelSpec(
            "fieldnet",
            "registration: a U-Net from a (moving, fixed) pair to a velocity or dense field, optionally after "
            "an affine transformer",
            _REGISTRATION,
            recipe={
                "transform": "velocity",
                "val_size": 8,
                "batch_size": 4,
                "epochs": 20,
                "lr": 1e-3,
                "weight_decay": 0.0,
                "schedule": "none",
            },
            task="registration",
        ),
        # the homography networks: (P_A, P_B) -> the four corner offsets in px (DeTone et al. 2016)
        ModelSpec(
            "homography-net",
            "homography: the supervised corner regressor (a smaller HomographyNet)",
            frozenset(),
            # batch 16: validation 22.62 px against batch 32's 23.07 (trials T1, T0; within the epochs' noise)
            recipe={**_HOMOGRAPHY_RECIPE, "batch_size": 16},
            task="homography",
        ),
        ModelSpec(
            "homography-unsup",
            "homography: the same net trained by a photometric loss through the warp, no corner labels",
            frozenset({"photometric_levels", "photometric_standardize"}),
            # the same recipe: neither a pyramid nor standardised patches in its loss left the identity on the
            # validation pairs (docs/experiments/homography/trials.md, U0 to U2)
            recipe=_HOMOGRAPHY_RECIPE,
            loss="photometric",
            task="homography",
        ),
    )
}
MODELS = tuple(REGISTRY)
SEQUENCE_MODELS = tuple(n for n, s in REGISTRY.items() if s.sequence)
REGISTRATION_MODELS = tuple(n for n, s in REGISTRY.items() if s.task == "registration")
# the models of the homography task (corner offsets, not classes)
HOMOGRAPHY_MODELS = tuple(n for n, s in REGISTRY.items() if s.task == "homography")
# the models with a spatial transformer in front of their classifier (an STClassifier), sequences apart
TRANSFORMER_MODELS = tuple(n for n, s in REGISTRY.items() if s.transformer and not s.sequence)
# the registry's recipes by model name (``TrainConfig.for_model`` reads them)
MODEL_RECIPES: dict[str, dict] = {n: s.recipe for n, s in REGISTRY.items() if s.recipe}


def model_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of a built-in model, or a ValueError naming the valid ones."""
    if name not in REGISTRY:
        raise ValueError(f"model must be one of {', '.join(MODELS)}, got {name!r}")
    return REGISTRY[name]


def options_unused_by(model: str, transform: str | None = None) -> frozenset[str]:
    """The model-specific training options (:data:`MODEL_OPTIONS`) that ``model`` ignores and,
    given its ``transform``, ``tps_grid_size`` unless that is tps."""
    unused = set(MODEL_OPTIONS - model_spec(model).options)
    if transform is not None and transform != "tps":
        unused.add("tps_grid_size")
    return frozenset(unused)


def row_key(model: str, transform: str | None = None) -> str:
    """The one name of a (model, transform) pair: a table row, a run directory, a title.

    A model with a transformer is named with its family, a plain classifier alone:

    >>> row_key("st-cnn", "affine"), row_key("cnn", "affine"), row_key("cnn")
    ('st-cnn-affine', 'cnn', 'cnn')
    """
    if model in TRANSFORMER_MODELS:
        if transform is None:
            raise ValueError(f"row_key: model {model!r} has a transformer, so it needs a transform family")
        return f"{model}-{transform}"
    return model


def split_row_key(key: str) -> tuple[str, str | None]:
    """``(model, transform)`` of a :func:`row_key` (``transform`` is ``None`` for a plain classifier).

    >>> split_row_key("st-cnn-affine"), split_row_key("cnn")
    (('st-cnn', 'affine'), ('cnn', None))
    """
    for model in TRANSFORMER_MODELS:
        family = key.removeprefix(model + "-")
        if family != key and family in TRANSFORMS:
            return model, family
    if key in MODELS and key not in TRANSFORMER_MODELS:
        return key, None
    raise ValueError(
        f"unknown row {key!r}: a model ({', '.join(m for m in MODELS if m not in TRANSFORMER_MODELS)}) "
        f"or a model with a transformer and its family ({', '.join(TRANSFORMER_MODELS)}, e.g. st-cnn-affine)"
    )


def row_label(key: str) -> str:
    """How a table shows a :func:`row_key`: ``"ST-CNN AFFINE"``, ``"CNN"``."""
    model, transform = split_row_key(key)
    return model.upper() if transform is None else f"{model.upper()} {transform.upper()}"
