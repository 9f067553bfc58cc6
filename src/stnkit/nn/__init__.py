"""``nn.Module`` wrappers: the spatial transformer, its parallel and series stacks, and the inverse compositional one;
diagnostics of a transformer's sampling grid (:mod:`stnkit.nn.diagnostics`)."""

from .diagnostics import (
    COLLAPSED_SCALE,
    IDENTITY_DISTANCE,
    OUTSIDE_FRACTION_WARN,
    collapse_warning,
    coverage_penalty,
    sampling_grid_stats,
    sampling_stats,
)
from .transformer import (
    IdentityHead,
    InverseCompositionalTransformer,
    ParallelTransformers,
    SeriesTransformers,
    SpatialTransformer,
    default_localization,
)

__all__ = [
    "COLLAPSED_SCALE",
    "IDENTITY_DISTANCE",
    "OUTSIDE_FRACTION_WARN",
    "IdentityHead",
    "InverseCompositionalTransformer",
    "ParallelTransformers",
    "SeriesTransformers",
    "SpatialTransformer",
    "collapse_warning",
    "coverage_penalty",
    "default_localization",
    "sampling_grid_stats",
    "sampling_stats",
]
