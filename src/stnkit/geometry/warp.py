"""The sampler: warp an image batch with a transform family's grid."""

from __future__ import annotations

import torch  # noqa: F401  (doctest namespace)
import torch.nn.functional as F
from torch import Tensor

from .._checks import check_choice, check_image, check_points, check_size
from .coords import finite_grid
from .families import TransformFamily, get_transform

MODES = ("bilinear", "nearest", "bicubic")
PADDING_MODES = ("zeros", "border", "reflection")


def sample(
    x: Tensor,
    grid: Tensor,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
    align_corners: bool = False,
) -> Tensor:
    """Sample ``x`` (B, C, H, W) at a grid (B, H_out, W_out, 2) of normalised input points.

    Every channel is sampled at the same points; points outside the image read
    the padding.
    """
    x = check_image("x", x)
    check_choice("mode", mode, MODES)
    check_choice("padding_mode", padding_mode, PADDING_MODES)
    if not isinstance(grid, Tensor) or grid.ndim != 4 or grid.shape[-1] != 2 or grid.shape[0] != x.shape[0]:
        got = tuple(grid.shape) if isinstance(grid, Tensor) else type(grid).__name__
        raise ValueError(f"grid must have shape ({x.shape[0]}, H_out, W_out, 2), got {got}")
    return F.grid_sample(x, grid.to(x.dtype), mode=mode, padding_mode=padding_mode, align_corners=align_corners)


def warp(
    x: Tensor,
    params: Tensor,
    transform: str | TransformFamily = "affine",
    out_size=None,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
    align_corners: bool = False,
) -> Tensor:
    """Warp an image batch with a spatial transform.

    Convention: ``params`` map **output** coordinates to **input** coordinates,
    normalised to ``[-1, 1]``, x before y (``F.affine_grid``'s convention), so the
    output pixel at ``p`` reads the input at ``T_params(p)``.

    Args:
        x: ``(B, C, H, W)`` floating tensor, any number of channels.
        params: ``(B, num_params)`` parameters of the family (affine also takes
            ``(B, 2, 3)``).
        transform: a family name (``translation``, ``attention``, ``similarity``,
            ``affine``, ``projective``, ``tps``) or a ``TransformFamily``.
        out_size: ``(H_out, W_out)`` or an int; defaults to ``(H, W)``.
        mode: ``bilinear``, ``nearest`` or ``bicubic``.
        padding_mode: ``zeros``, ``border`` or ``reflection``.
        align_corners: see :mod:`stnkit.geometry.coords`.

    Returns:
        ``(B, C, H_out, W_out)``. For ``affine`` this equals
        ``F.grid_sample(x, F.affine_grid(theta, ...))`` with the same settings.

    Example:
        >>> x = torch.rand(2, 3, 8, 8)
        >>> ident = get_transform("similarity").identity(2)
        >>> torch.allclose(warp(x, ident, "similarity"), x, atol=1e-6)
        True
    """
    family = get_transform(transform)
    x = check_image("x", x)
    check_choice("mode", mode, MODES)
    check_choice("padding_mode", padding_mode, PADDING_MODES)
    params = family.check_params(params)
    if params.shape[0] != x.shape[0]:
        raise ValueError(f"params must have the same batch size as x ({x.shape[0]}), got {params.shape[0]}")
    if params.device != x.device:
        raise ValueError(f"params must be on the device of x ({x.device}), got {params.device}")
    size = tuple(x.shape[-2:]) if out_size is None else check_size("out_size", out_size)
    grid = family._grid(params, size, align_corners)
    return F.grid_sample(x, grid.to(x.dtype), mode=mode, padding_mode=padding_mode, align_corners=align_corners)


def compose_grid(
    params: list[Tensor],
    transforms: list[str | TransformFamily],
    out_size,
    align_corners: bool = False,
) -> Tensor:
    """The single grid of several warps applied in series, of any families.

    ``params[0]`` warps the input first, ``params[-1]`` last; the returned grid
    samples the original input once: ``T_0(T_1(...T_n(p)))``.
    """
    if not isinstance(params, (list, tuple)) or not isinstance(transforms, (list, tuple)):
        raise TypeError(
            f"params and transforms must be lists, got {type(params).__name__} and {type(transforms).__name__}"
        )
    if len(params) != len(transforms) or not params:
        raise ValueError(
            f"params and transforms must be non-empty lists of equal length, got {len(params)} and {len(transforms)}"
        )
    families = [get_transform(t) for t in transforms]
    size = check_size("out_size", out_size)
    g = families[-1].grid(params[-1], size, align_corners)
    b = g.shape[0]
    pts = check_points("grid points", g.reshape(b, -1, 2))
    for family, p in zip(reversed(families[:-1]), reversed(params[:-1])):
        pts = family.transform_points(p, pts)
    return finite_grid(pts.view(b, size[0], size[1], 2))
