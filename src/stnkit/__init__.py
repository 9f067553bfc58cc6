"""stnkit: spatial transformer networks for PyTorch.

Convention (everywhere): transform parameters map output coordinates to input
coordinates, normalised to [-1, 1], x before y, ``align_corners=False`` by
default, exactly as ``torch.nn.functional.affine_grid``.

The names below are loaded on first use (``stnkit.warp``, ``from stnkit import warp``), so that
``import stnkit.cli`` does not import torch before the command line can answer a Ctrl-C.
"""

import importlib

__version__ = "0.1.0"

# name -> the submodule that defines it
_LAZY = {
    "TRANSFORMS": "geometry",
    "get_transform": "geometry",
    "warp": "geometry",
    "ParallelTransformers": "nn",
    "SeriesTransformers": "nn",
    "SpatialTransformer": "nn",
    "with_transformer": "nn",
    "export_model": "export",
}

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


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value  # loaded once
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
