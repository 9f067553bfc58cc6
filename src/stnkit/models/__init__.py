"""The paper's classifiers and their spatial-transformer versions.

``create(name, **options)`` builds one of ``fcn``, ``cnn``, ``st-fcn``, ``st-cnn``.
Every classifier has three weight layers and, for the same input, about the
same number of parameters (Jaderberg et al. 2015, section 4.1):

* ``cnn``: conv 9x9 -> max-pool 2 -> ReLU -> conv 7x7 -> max-pool 2 -> ReLU -> linear.
* ``fcn``: linear -> ReLU -> linear -> ReLU -> linear, hidden width chosen so
  the parameter count matches the CNN's on the same input unless given.
* ``st-fcn`` / ``st-cnn``: one or more spatial transformers (``num_transformers``
  in parallel, outputs concatenated) in front of the FCN / CNN. The ST-FCN's
  localisation net is three fully connected layers of 32 units, the ST-CNN's two
  5x5 conv layers of 20 filters with max-pooling and a fully connected layer.

A baseline users know: ``tutorial-cnn`` and ``tutorial-stn``, the network of the
official PyTorch spatial transformer tutorial rebuilt from its published layer
sizes (classifier: conv 10@5x5, max-pool, conv 20@5x5 with 2-D dropout, max-pool,
FC 50 with dropout, FC 10; localisation: conv 8@7x7, max-pool, conv 10@5x5,
max-pool, FC 32, then the identity-initialised head), for any input size.

``homography-net`` and ``homography-unsup``: :class:`~stnkit.models.homography.HomographyNet`,
the corner regressor of deep homography estimation (``num_classes`` outputs: the 8 corner
offsets); the two differ in their training loss (the registry's ``loss``).

``ic-stn``: the inverse compositional STN (Lin and Lucey 2017): one
:class:`~stnkit.nn.InverseCompositionalTransformer` (``ic_steps`` recurrent warps
composed in parameter space, a matrix family) in front of the CNN. Its
localisation net and classifier are the ST-CNN's, so ``ic-stn`` with one step is
the ST-CNN and the rows of ``stnkit reproduce icstn`` differ only in the
recurrence. (The IC-STN authors' released MNIST code uses smaller nets:
localisation conv 7x7 (4) -> conv 7x7 (8) -> max-pool -> FC 48, classifier
conv 9x9 (3) -> FC 10.)
"""

from __future__ import annotations

import torch  # noqa: F401  (used by the doctest)
from torch import nn

from .._checks import check_int, check_size
from ..geometry import TransformFamily, get_transform
from ..nn import (
    InverseCompositionalTransformer,
    Normalize,
    ParallelTransformers,
    SpatialTransformer,
    STClassifier,  # defined in stnkit.nn.wrap; re-exported here, where it always was
    default_localization,
)
from .backbones import BACKBONES, load_backbone
from .classifiers import (
    CNN,
    FCN,
    TutorialCNN,
    count_parameters,
    fc_localization,
    tutorial_localization,
)
from .homography import HomographyNet
from .registration import FieldRegistration
from .registry import (
    HOMOGRAPHY_MODELS,
    MODEL_OPTIONS,
    MODEL_RECIPES,
    MODELS,
    REGISTRATION_MODELS,
    REGISTRY,
    SEQUENCE_MODELS,
    TRANSFORMER_MODELS,
    ModelSpec,
    model_spec,
    options_unused_by,
    row_key,
    row_label,
    split_row_key,
)
from .sequence import RecurrentSPN, SequenceCNN


def transformer_families(model: nn.Module) -> list[TransformFamily]:
    """The transform family of each (parallel) transformer of an ST model; ``[]`` for a plain classifier.

    Example:
        >>> [f.name for f in transformer_families(create("st-cnn", num_transformers=2, transform="tps"))]
        ['tps', 'tps']
        >>> transformer_families(create("cnn"))
        []
    """
    if not isinstance(model, STClassifier):
        return []
    st = model.transformer
    return [t.family for t in getattr(st, "transformers", [st])]


def create(
    name: str,
    in_channels: int = 1,
    in_size=28,
    num_classes: int = 10,
    transform: str = "affine",
    num_transformers: int = 1,
    st_size=None,
    bounded: bool = False,
    dropout: float = 0.0,
    hidden: int | None = None,
    tps_grid_size: int = 4,
    loc_downsample: int = 1,
    ic_steps: int = 4,
    num_labels: int = 1,
    backbone: str = "cnn",
    normalize: tuple | None = None,
    pre_affine: bool = False,
) -> nn.Module:
    """Build a model by name (``fcn``, ``cnn``, ``st-fcn``, ``st-cnn``, ``tutorial-cnn``, ``tutorial-stn``, ``ic-stn``).

    Args:
        in_channels, in_size: the input images' channels and ``(H, W)`` (or an int).
        num_classes: number of output classes.
        transform: the transformers' family (ST models).
        num_transformers: transformers in parallel (the paper's 2x/4x ST-CNN).
        st_size: the transformers' output size (each :class:`~stnkit.nn.SpatialTransformer`'s
            ``out_size``, and so the classifier's input size); ``None`` keeps the input size,
            smaller downsamples (the paper did this on large canvases).
        bounded: squash the transformers' parameters (``SpatialTransformer(bounded=True)``).
        dropout: dropout before the classifiers' last layers.
        hidden: the FCN's hidden width (default: matched to the CNN's parameter count).
        tps_grid_size: control points per side for ``transform="tps"``.
        loc_downsample: the localisation nets see the input averaged over
            ``loc_downsample x loc_downsample`` blocks (``SpatialTransformer(loc_size=...)``);
            the sampler still reads the full-resolution input. 1: the input itself.
        ic_steps: ``ic-stn``: the number of recurrent warps.
        backbone: the classifier of ``cnn`` and ``st-cnn``: ``"cnn"`` (the paper's), a
            :data:`~stnkit.models.backbones.BACKBONES` name (``"resnet18"``, ``"resnet34"``)
            or a user's ``"package.module:callable"`` (:func:`~stnkit.models.backbones.load_backbone`).
        normalize: ``(mean, std)`` per channel: a :class:`~stnkit.nn.Normalize` layer after the
            transformers, before the classifier (``None``: the inputs are used as they are).
        pre_affine: ``fieldnet``: an affine transformer before the field (:class:`FieldRegistration`).
        num_labels: labels per sample; the sequence models (``seq-cnn``, ``seq-st-cnn``,
            ``rnn-spn``, :mod:`stnkit.models.sequence`) need it > 1 and output
            ``(B, num_labels, num_classes)``; the others need 1.

    Example:
        >>> model = create("st-cnn", in_size=42, transform="affine")
        >>> model(torch.rand(2, 1, 42, 42)).shape
        torch.Size([2, 10])
    """
    if name in REGISTRATION_MODELS:
        return _registration_model(name, in_channels, in_size, transform, pre_affine)
    model = _create(
        name,
        in_channels,
        in_size,
        num_classes,
        transform,
        num_transformers,
        st_size,
        bounded,
        dropout,
        hidden,
        tps_grid_size,
        loc_downsample,
        ic_steps,
        num_labels,
        backbone,
    )
    if normalize is None:
        return model
    norm = Normalize(*normalize)
    if isinstance(model, STClassifier):
        model.classifier = nn.Sequential(norm, model.classifier)
        return model
    return nn.Sequential(norm, model)


def _create(
    name,
    in_channels,
    in_size,
    num_classes,
    transform,
    num_transformers,
    st_size,
    bounded,
    dropout,
    hidden,
    tps_grid_size,
    loc_downsample,
    ic_steps,
    num_labels,
    backbone,
) -> nn.Module:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODELS)}")
    in_size = check_size("in_size", in_size)
    check_int("num_transformers", num_transformers)
    check_int("loc_downsample", loc_downsample)
    loc_size = (in_size[0] // loc_downsample, in_size[1] // loc_downsample)
    if min(loc_size) < 1:
        raise ValueError(f"loc_downsample must leave at least one pixel of in_size {in_size}, got {loc_downsample}")
    check_int("num_labels", num_labels)
    if (name in SEQUENCE_MODELS) != (num_labels > 1):
        raise ValueError(
            f"num_labels must be {'> 1' if name in SEQUENCE_MODELS else '1'} for model {name!r}, got {num_labels}"
        )
    if name in HOMOGRAPHY_MODELS:  # num_classes: the regressed numbers (8 corner offsets)
        return HomographyNet(in_channels, in_size, num_classes, dropout=dropout)
    if name in SEQUENCE_MODELS:
        return _sequence_model(
            name, in_channels, in_size, num_classes, num_labels, transform, st_size, loc_size, dropout
        )
    if name.startswith("tutorial-"):
        if num_transformers != 1:
            raise ValueError(f"the tutorial network has one transformer, got num_transformers={num_transformers!r}")
        if name == "tutorial-cnn":
            return TutorialCNN(in_channels, in_size, num_classes)
        classifier_size = in_size if st_size is None else check_size("st_size", st_size)
        classifier = TutorialCNN(in_channels, classifier_size, num_classes)
        st = SpatialTransformer(
            tutorial_localization(in_channels, loc_size),
            transform=get_transform(transform, grid_size=tps_grid_size) if transform == "tps" else transform,
            out_size=classifier_size,
            in_channels=in_channels,
            in_size=in_size,
            bounded=bounded,
            loc_size=None if loc_downsample == 1 else loc_size,
        )
        return STClassifier(st, classifier)
    if name == "ic-stn":
        check_int("ic_steps", ic_steps)
        if num_transformers != 1:
            raise ValueError(f"ic-stn has one (recurrent) transformer, got num_transformers={num_transformers!r}")
        family = get_transform(transform)
        if not family.is_matrix:
            raise ValueError(f"ic-stn composes warps as matrices: transform must not be {family.name!r}")
        out_size = in_size if st_size is None else check_size("st_size", st_size)
        st = InverseCompositionalTransformer(
            default_localization(in_channels, loc_size)[0],
            transform=family,
            steps=ic_steps,
            out_size=out_size,
            in_channels=in_channels,
            in_size=in_size,
            bounded=bounded,
            loc_size=None if loc_downsample == 1 else loc_size,
        )
        return STClassifier(st, CNN(in_channels, out_size, num_classes, dropout=dropout))
    base = name.removeprefix("st-")
    if name.startswith("st-"):
        family = get_transform(transform, grid_size=tps_grid_size) if transform == "tps" else get_transform(transform)
        out_size = in_size if st_size is None else check_size("st_size", st_size)
        transformers = []
        for _ in range(num_transformers):
            if base == "fcn":
                loc = fc_localization(in_channels, loc_size)
            else:
                loc = default_localization(in_channels, loc_size)[0]
            st = SpatialTransformer(
                loc,
                transform=family,
                out_size=out_size,
                in_channels=in_channels,
                in_size=in_size,
                bounded=bounded,
                loc_size=None if loc_downsample == 1 else loc_size,
            )
            transformers.append(st)
        stack = transformers[0] if num_transformers == 1 else ParallelTransformers(*transformers)
        classifier = _classifier(base, in_channels * num_transformers, out_size, num_classes, hidden, dropout, backbone)
        return STClassifier(stack, classifier)
    return _classifier(base, in_channels, in_size, num_classes, hidden, dropout, backbone)


def _registration_model(name, in_channels, in_size, transform, pre_affine) -> nn.Module:
    """``fieldnet`` for pairs of ``in_size`` (``(H, W)`` or ``(D, H, W)``), ``transform`` its field."""
    if isinstance(in_size, int) or not hasattr(in_size, "__len__") or len(in_size) not in (2, 3):
        raise ValueError(f"in_size must be (H, W) or (D, H, W) for model {name!r}, got {in_size!r}")
    size = tuple(check_int("in_size", s) for s in in_size)
    if transform not in ("dense", "velocity"):
        raise ValueError(f"transform must be 'dense' or 'velocity' for model {name!r}, got {transform!r}")
    model = FieldRegistration(len(size), transform, pre_affine=pre_affine, in_channels=in_channels)
    if any(s % model.divisor for s in size):
        raise ValueError(f"in_size must be divisible by {model.divisor} for model {name!r}, got {size}")
    return model


def _sequence_model(name, in_channels, in_size, num_classes, num_labels, transform, st_size, loc_size, dropout):
    if name == "seq-cnn":
        return SequenceCNN(in_channels, in_size, num_labels, num_classes, dropout)
    if transform != "affine":
        raise ValueError(f"transform must be 'affine' for model {name!r}, got {transform!r}")
    if name == "rnn-spn":  # st_size: the size of each step's crop (default 28, a digit's)
        crop = 28 if st_size is None else check_size("st_size", st_size)
        return RecurrentSPN(in_channels, in_size, num_labels, num_classes, crop, loc_size, dropout=dropout)
    # seq-st-cnn: the transformer downsamples by 2 unless st_size says otherwise (Sonderby et al.'s CNN-SPN)
    out_size = (in_size[0] // 2, in_size[1] // 2) if st_size is None else check_size("st_size", st_size)
    st = SpatialTransformer(
        default_localization(in_channels, loc_size)[0],
        transform="affine",
        out_size=out_size,
        in_channels=in_channels,
        in_size=in_size,
        loc_size=None if loc_size == in_size else loc_size,
    )
    return STClassifier(st, SequenceCNN(in_channels, out_size, num_labels, num_classes, dropout))


def _classifier(
    base: str, in_channels: int, in_size, num_classes: int, hidden, dropout: float, backbone: str = "cnn"
) -> nn.Module:
    if base == "cnn" and backbone != "cnn":
        return load_backbone(backbone)(in_channels=in_channels, in_size=in_size, num_classes=num_classes)
    if base == "cnn":
        return CNN(in_channels, in_size, num_classes, dropout=dropout)
    return FCN(in_channels, in_size, num_classes, hidden=hidden, dropout=dropout)


__all__ = [
    "BACKBONES",
    "CNN",
    "HOMOGRAPHY_MODELS",
    "HomographyNet",
    "load_backbone",
    "FCN",
    "FieldRegistration",
    "MODELS",
    "MODEL_OPTIONS",
    "MODEL_RECIPES",
    "REGISTRATION_MODELS",
    "REGISTRY",
    "TRANSFORMER_MODELS",
    "ModelSpec",
    "model_spec",
    "options_unused_by",
    "row_key",
    "row_label",
    "split_row_key",
    "SEQUENCE_MODELS",
    "STClassifier",
    "TutorialCNN",
    "count_parameters",
    "create",
    "fc_localization",
    "transformer_families",
    "tutorial_localization",
]
