"""``nn.Module`` wrappers: the spatial transformer, its parallel and series stacks, the inverse compositional
one, and a classifier behind transformers (:class:`STClassifier`, :func:`with_transformer`)."""

from .normalize import Normalize
from .transformer import (
    IdentityHead,
    InverseCompositionalTransformer,
    ParallelTransformers,
    SeriesTransformers,
    SpatialTransformer,
    default_localization,
)
from .wrap import STClassifier, default_loc_size, with_transformer

__all__ = [
    "IdentityHead",
    "InverseCompositionalTransformer",
    "Normalize",
    "ParallelTransformers",
    "STClassifier",
    "SeriesTransformers",
    "SpatialTransformer",
    "default_loc_size",
    "default_localization",
    "with_transformer",
]
