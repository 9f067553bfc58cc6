"""stnkit: spatial transformer networks for PyTorch.

Convention (everywhere): transform parameters map output coordinates to input
coordinates, normalised to [-1, 1], x before y, ``align_corners=False`` by
default, exactly as ``torch.nn.functional.affine_grid``.
"""

from ._runtime import warm_vector_math

warm_vector_math()  # before any threaded call: see stnkit._runtime

from .export import export_model  # noqa: E402
from .geometry import TRANSFORMS, get_transform, warp  # noqa: E402
from .nn import ParallelTransformers, SeriesTransformers, SpatialTransformer, with_transformer  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "TRANSFORMS",
    "ParallelTransformers",
    "SeriesTransformers",
    "SpatialTransformer",
    "__version__",
    "export_model",
    "get_transform",
    "warp",
    "with_transformer",
]
