"""``nn.Module`` wrappers: the spatial transformer, its parallel and series stacks, and the inverse compositional one."""

from .transformer import (
    IdentityHead,
    InverseCompositionalTransformer,
    ParallelTransformers,
    SeriesTransformers,
    SpatialTransformer,
    default_localization,
)

__all__ = [
    "IdentityHead",
    "InverseCompositionalTransformer",
    "ParallelTransformers",
    "SeriesTransformers",
    "SpatialTransformer",
    "default_localization",
]
