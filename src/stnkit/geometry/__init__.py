"""Pure functions for spatial transforms: families, grids, sampling, conventions.

See :mod:`stnkit.geometry.coords` for the one coordinate convention used everywhere.
"""

from .boxes import attention_box, attention_from_box, box_iou
from .coords import (
    GRID_LIMIT,
    base_grid,
    from_pixel_matrix,
    normalization_matrix,
    to_pixel_matrix,
)
from .families import (
    TRANSFORMS,
    Affine,
    Attention,
    MatrixFamily,
    Projective,
    Similarity,
    ThinPlateSpline,
    TransformFamily,
    Translation,
    get_transform,
)
from .polygon import quad_is_convex
from .warp import MODES, PADDING_MODES, compose_grid, sample, warp

__all__ = [
    "GRID_LIMIT",
    "MODES",
    "PADDING_MODES",
    "TRANSFORMS",
    "Affine",
    "Attention",
    "MatrixFamily",
    "Projective",
    "Similarity",
    "ThinPlateSpline",
    "TransformFamily",
    "Translation",
    "attention_box",
    "attention_from_box",
    "base_grid",
    "box_iou",
    "compose_grid",
    "from_pixel_matrix",
    "get_transform",
    "normalization_matrix",
    "quad_is_convex",
    "sample",
    "to_pixel_matrix",
    "warp",
]
