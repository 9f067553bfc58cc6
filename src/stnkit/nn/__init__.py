"""``nn.Module`` wrappers: the spatial transformer and its parallel and series stacks."""

from .transformer import (
    IdentityHead,
    ParallelTransformers,
    SeriesTransformers,
    SpatialTransformer,
    default_localization,
)

__all__ = [
    "IdentityHead",
    "ParallelTransformers",
    "SeriesTransformers",
    "SpatialTransformer",
    "default_localization",
]
