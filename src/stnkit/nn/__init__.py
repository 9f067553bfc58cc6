"""``nn.Module`` wrappers: the spatial transformer, its parallel and series stacks, the inverse compositional
one, a classifier behind transformers (:class:`STClassifier`, :func:`with_transformer`), a
normalisation layer to put after them, a U-Net predicting dense fields for registration
(:class:`FieldNet`), a translation-equivariant heatmap localisation net (:class:`HeatmapLocalization`), the ST-GAN's iterative warp generator and discriminator for compositing
(:mod:`stnkit.nn.compositing`), and diagnostics of a transformer's sampling grid
(:mod:`stnkit.nn.diagnostics`)."""

from .compositing import CompositeDiscriminator, IterativeWarpGenerator, composite
from .diagnostics import (
    COLLAPSED_SCALE,
    IDENTITY_DISTANCE,
    OUTSIDE_FRACTION_WARN,
    collapse_warning,
    coverage_penalty,
    sampling_grid_stats,
    sampling_stats,
)
from .fieldnet import FieldNet
from .heatmap import HeatmapLocalization, soft_argmax_2d
from .normalize import Normalize
from .transformer import (
    IdentityHead,
    InverseCompositionalTransformer,
    ParallelTransformers,
    SeriesTransformers,
    SpatialTransformer,
    default_localization,
    default_localization_3d,
)
from .wrap import STClassifier, default_loc_size, with_transformer

__all__ = [
    "COLLAPSED_SCALE",
    "CompositeDiscriminator",
    "IDENTITY_DISTANCE",
    "FieldNet",
    "HeatmapLocalization",
    "OUTSIDE_FRACTION_WARN",
    "IdentityHead",
    "InverseCompositionalTransformer",
    "IterativeWarpGenerator",
    "Normalize",
    "ParallelTransformers",
    "STClassifier",
    "SeriesTransformers",
    "SpatialTransformer",
    "collapse_warning",
    "composite",
    "coverage_penalty",
    "default_loc_size",
    "default_localization",
    "default_localization_3d",
    "sampling_grid_stats",
    "sampling_stats",
    "soft_argmax_2d",
    "with_transformer",
]
