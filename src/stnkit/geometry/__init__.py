"""Pure functions for spatial transforms: families, grids, sampling, conventions.

See :mod:`stnkit.geometry.coords` for the one coordinate convention used everywhere.
"""

from .boxes import attention_box, attention_from_box, box_iou
from .coords import (
    GRID_LIMIT,
    base_grid,
    base_grid_3d,
    from_pixel_matrix,
    normalization_matrix,
    to_pixel_matrix,
)
from .cubic import bspline_prefilter, sample_cubic
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
from .fields import (
    compose_fields,
    field_from_pixels,
    field_grid,
    field_to_pixels,
    folding_fraction,
    from_monai,
    from_voxelmorph,
    grid_to_field,
    integrate_velocity,
    invert_field,
    jacobian_determinant,
    to_monai,
    to_voxelmorph,
    warp_field,
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
    "base_grid_3d",
    "box_iou",
    "bspline_prefilter",
    "compose_fields",
    "compose_grid",
    "field_from_pixels",
    "field_grid",
    "field_to_pixels",
    "folding_fraction",
    "from_monai",
    "from_pixel_matrix",
    "from_voxelmorph",
    "get_transform",
    "grid_to_field",
    "integrate_velocity",
    "invert_field",
    "jacobian_determinant",
    "normalization_matrix",
    "quad_is_convex",
    "sample",
    "sample_cubic",
    "to_monai",
    "to_pixel_matrix",
    "to_voxelmorph",
    "warp",
    "warp_field",
]
