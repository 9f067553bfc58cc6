"""The sampler: warp an image batch with a transform family's grid.

References:
    M. Jaderberg, K. Simonyan, A. Zisserman, K. Kavukcuoglu, "Spatial
    Transformer Networks", NeurIPS 2015 (arXiv:1506.02025): section 3.3, the
    differentiable image sampling.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import (
    check_choice,
    check_image_or_volume,
    check_points,
    check_points_3d,
    check_size,
    check_size_3d,
    is_tracing,
)
from .coords import finite_grid
from .families import TransformFamily, get_transform

# the interpolations and paddings of F.grid_sample that every warp accepts
MODES = ("bilinear", "nearest", "bicubic")
PADDING_MODES = ("zeros", "border", "reflection")

# float16 and bfloat16 images are sampled in float32 and the result cast back (as torch.autocast runs
# grid_sample): in float16 the sampler's pixel coordinates ((g + 1) * W - 1) / 2 overflow to inf for grid
# points a few thousand widths outside the image (|g| * W > 65504), and the output turns NaN
LOW_PRECISION = (torch.float16, torch.bfloat16)


def _grid_sample(x: Tensor, grid: Tensor, mode: str, padding_mode: str, align_corners: bool) -> Tensor:
    """``F.grid_sample``, with one volume cut into a piece per torch thread where that changes no value.

    torch's CPU kernel for volumes runs its batch items in parallel, and nothing else: a single volume
    uses one core. Its output points, read as ``k`` batch items of one ``k``-th each from the same
    (expanded, not copied) input, are the same numbers, as is the gradient to the grid; so where the
    input needs no gradient (whose ``k`` pieces would be summed in another order) the points are cut.
    """
    if x.ndim != 5 or x.shape[0] != 1 or x.device.type != "cpu" or is_tracing():  # tracing: before any thread query
        return F.grid_sample(x, grid, mode=mode, padding_mode=padding_mode, align_corners=align_corners)
    k = torch.get_num_threads()
    n = grid[0, ..., 0].numel()
    if k > 1 and n % k == 0 and n >= 4096 * k and not (x.requires_grad and torch.is_grad_enabled()):
        out = F.grid_sample(
            x.expand(k, -1, -1, -1, -1),
            grid.reshape(k, 1, 1, n // k, 3),
            mode=mode,
            padding_mode=padding_mode,
            align_corners=align_corners,
        )
        return out.transpose(0, 1).reshape(1, x.shape[1], *grid.shape[1:4])
    return F.grid_sample(x, grid, mode=mode, padding_mode=padding_mode, align_corners=align_corners)


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in LOW_PRECISION else dtype


def _check_mode_3d(mode: str, x: Tensor) -> None:
    if mode == "bicubic" and x.ndim == 5:
        raise ValueError(
            "mode 'bicubic' is 2-D only (F.grid_sample has no 3-D bicubic); for a volume (B, C, D, H, W) "
            "sample the grid with stnkit.geometry.sample_cubic (cubic B-spline) instead"
        )


def sample(
    x: Tensor,
    grid: Tensor,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
    align_corners: bool = False,
) -> Tensor:
    """Sample ``x`` at a grid of normalised input points: ``F.grid_sample`` with checked input.

    ``grid[b, i, j]`` is the point ``(x, y)`` of the input, normalised to
    ``[-1, 1]`` with x before y, that output pixel ``(i, j)`` reads: the grid
    already holds the output -> input map (a family's :meth:`~stnkit.geometry.TransformFamily.grid`,
    :func:`compose_grid` or ``F.affine_grid`` make one). Every channel is
    sampled at the same points; points outside the image read the padding.

    Volumes work the same way: ``x`` ``(B, C, D, H, W)`` and ``grid``
    ``(B, D_out, H_out, W_out, 3)`` of points ``(x, y, z)`` along ``(W, H, D)``
    (``F.affine_grid``'s 3-D frame, ``align_corners`` as in 2-D); ``bilinear``
    is trilinear there, and ``bicubic`` is refused (use
    :func:`~stnkit.geometry.sample_cubic`).

    Args:
        x: ``(B, C, H, W)`` or ``(B, C, D, H, W)`` floating tensor (float16 and bfloat16 are sampled in float32).
        grid: ``(B, H_out, W_out, 2)``, or ``(B, D_out, H_out, W_out, 3)`` for a volume; cast to ``x``'s
            dtype (float32 for float16 or bfloat16 ``x``).
        mode: ``bilinear``, ``nearest`` or ``bicubic`` (2-D only).
        padding_mode: ``zeros``, ``border`` or ``reflection``.
        align_corners: the frame the grid was made in (see :mod:`stnkit.geometry.coords`).

    Returns:
        ``(B, C, H_out, W_out)`` or ``(B, C, D_out, H_out, W_out)`` in ``x``'s dtype.

    Example:
        >>> x = torch.arange(6.0).view(1, 1, 2, 3)  # rows [0, 1, 2] and [3, 4, 5]
        >>> grid = torch.tensor([[[[2 / 3, -0.5]]]])  # (x, y) of the centre of row 0, column 2
        >>> sample(x, grid, mode="nearest")
        tensor([[[[2.]]]])
    """
    x = check_image_or_volume("x", x)
    check_choice("mode", mode, MODES)
    check_choice("padding_mode", padding_mode, PADDING_MODES)
    _check_mode_3d(mode, x)
    k = x.ndim - 2
    if not isinstance(grid, Tensor) or grid.ndim != x.ndim or grid.shape[-1] != k or grid.shape[0] != x.shape[0]:
        got = tuple(grid.shape) if isinstance(grid, Tensor) else type(grid).__name__
        spatial = "H_out, W_out" if k == 2 else "D_out, H_out, W_out"
        raise ValueError(f"grid must have shape ({x.shape[0]}, {spatial}, {k}), got {got}")
    work = _work_dtype(x.dtype)
    out = _grid_sample(x.to(work), grid.to(work), mode, padding_mode, align_corners)
    return out.to(x.dtype)


def warp(
    x: Tensor,
    params: Tensor,
    transform: str | TransformFamily = "affine",
    out_size: int | tuple[int, int] | None = None,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
    align_corners: bool = False,
) -> Tensor:
    """Warp an image batch with a spatial transform: the grid generator and the sampler in one call.

    Convention: ``params`` map **output** coordinates to **input** coordinates,
    normalised to ``[-1, 1]``, x before y (``F.affine_grid``'s convention), so the
    output pixel at ``p`` reads the input at ``T_params(p)``. A positive ``tx``
    therefore moves the content to the left.

    Volumes: for ``x`` of shape ``(B, C, D, H, W)`` a family name means the
    3-D family of that name (``get_transform(name, dims=3)``, see
    :mod:`stnkit.geometry.families3d`): ``"affine"`` is then the 12-parameter
    affine, ``params`` ``(B, 12)`` or ``(B, 3, 4)``, exactly ``F.affine_grid``'s
    3-D theta; coordinates ``(x, y, z)`` run along ``(W, H, D)`` and
    ``align_corners`` means what it means in 2-D. Parameters of the other
    dimension's shape, or a ``TransformFamily`` of the other dimension, raise a
    ``ValueError`` naming both.

    Dense fields: ``transform="dense"`` or ``"velocity"`` (or
    ``get_transform("velocity", steps=4)``, :mod:`stnkit.geometry.dense`) take a
    field ``params`` ``(B, 2, H_out, W_out)`` or ``(B, 3, D_out, H_out, W_out)``
    (channels ``(x, y[, z])``, normalised, :mod:`stnkit.geometry.fields`): ``dense``
    is :func:`~stnkit.geometry.warp_field`, ``velocity`` integrates the field
    (:func:`~stnkit.geometry.integrate_velocity`, 7 squarings by default) and then
    warps. The field's spatial size, which may differ from ``x``'s, is the output
    size: ``out_size`` must be ``None`` or that size.

    Args:
        x: ``(B, C, H, W)`` image or ``(B, C, D, H, W)`` volume, floating, any number of channels: float32,
            float64, or float16 / bfloat16 (the grid is made and sampled in float32,
            the result cast back, so huge parameters read the padding, never NaN).
        params: ``(B, num_params)`` parameters of the family (affine also takes
            ``(B, 2, 3)``, or ``(B, 3, 4)`` in 3-D); float16 / bfloat16 parameters make the grid in float32.
        transform: a family name (``translation``, ``attention``, ``similarity``,
            ``affine``, ``projective``, ``tps``; in 3-D these and ``rigid``; ``dense``, ``velocity``)
            or a ``TransformFamily`` of ``x``'s dimension.
        out_size: ``(H_out, W_out)`` (``(D_out, H_out, W_out)`` for a volume) or an int;
            defaults to ``x``'s spatial size.
        mode: ``bilinear`` (trilinear on a volume), ``nearest`` or ``bicubic`` (2-D
            only: for volumes use :func:`~stnkit.geometry.sample_cubic` on the family's grid).
        padding_mode: ``zeros``, ``border`` or ``reflection``.
        align_corners: see :mod:`stnkit.geometry.coords`.

    Returns:
        ``(B, C, H_out, W_out)`` (or ``(B, C, D_out, H_out, W_out)``) in ``x``'s dtype, finite for finite ``x`` and
        ``params``. For ``affine`` this equals ``F.grid_sample(x, F.affine_grid(theta, ...))`` with the same settings.

    Raises:
        TypeError, ValueError: a message naming the argument, for input of the
            wrong type, shape, batch size, device or value.

    Example:
        >>> x = torch.rand(2, 3, 8, 8)
        >>> ident = get_transform("similarity").identity(2)
        >>> torch.allclose(warp(x, ident, "similarity"), x, atol=1e-6)
        True
        >>> row = torch.arange(4.0).view(1, 1, 1, 4)
        >>> warp(row, torch.tensor([[0.5, 0.0]]), "translation", mode="nearest")  # tx = 1 px (2/4)
        tensor([[[[1., 2., 3., 0.]]]])

    References:
        Jaderberg et al., "Spatial Transformer Networks", NeurIPS 2015.
    """
    x = check_image_or_volume("x", x)
    dims = x.ndim - 2
    if isinstance(transform, TransformFamily) and transform.dims != dims:
        layout = "(B, C, H, W) image" if dims == 2 else "(B, C, D, H, W) volume"
        raise ValueError(
            f"transform {transform!r} is {transform.dims}-D, but x of shape {tuple(x.shape)} is a {layout}; "
            f"pass the name {transform.name!r} or get_transform({transform.name!r}, dims={dims})"
        )
    family = get_transform(transform, dims=dims)
    check_choice("mode", mode, MODES)
    check_choice("padding_mode", padding_mode, PADDING_MODES)
    _check_mode_3d(mode, x)
    params = family.check_params(params)
    if params.shape[0] != x.shape[0]:
        raise ValueError(f"params must have the same batch size as x ({x.shape[0]}), got {params.shape[0]}")
    if params.device != x.device:
        raise ValueError(f"params must be on the device of x ({x.device}), got {params.device}")
    if getattr(family, "is_field", False):  # dense / velocity: the field's spatial size is the output's
        size = family.check_out_size(params, out_size)
    else:
        spatial = x.shape[2:] if out_size is None else out_size  # torch.Size: traceable
        size = check_size("out_size", spatial) if dims == 2 else check_size_3d("out_size", spatial)
    grid = family._grid(params.to(_work_dtype(params.dtype)), size, align_corners)
    work = _work_dtype(x.dtype)
    out = _grid_sample(x.to(work), grid.to(work), mode, padding_mode, align_corners)
    return out.to(x.dtype)


def compose_grid(
    params: list[Tensor],
    transforms: list[str | TransformFamily],
    out_size: int | tuple[int, int] | tuple[int, int, int],
    align_corners: bool = False,
) -> Tensor:
    """The single grid of several warps applied in series, of any families, in 2-D or 3-D.

    ``params[0]`` warps the input first, ``params[-1]`` last; the returned grid
    samples the original input once: output point ``p`` reads the input at
    ``T_0(T_1(...T_n(p)))`` (each ``T`` maps output to input, normalised, x
    before y). So ``sample(x, compose_grid(...))`` equals the warps done one
    after the other, without the blur of sampling several times.

    Volumes: a 3-tuple ``out_size`` ``(D, H, W)`` or a 3-D ``TransformFamily`` among
    ``transforms`` makes it 3-D (names then mean the 3-D families); the grid is
    ``(B, D, H, W, 3)`` of points ``(x, y, z)``. A ``dense`` or ``velocity`` field
    may be the **last** stage only (its grid starts the chain; an earlier stage
    would have to map arbitrary points, which a field given on a grid does not:
    compose fields with :func:`~stnkit.geometry.compose_fields`); it must be at
    ``out_size``.

    Args:
        params: one ``(B, num_params)`` tensor per stage (a field for a last field stage), the same ``B``.
        transforms: one family name or ``TransformFamily`` per stage.
        out_size: ``(H_out, W_out)`` (``(D_out, H_out, W_out)``) of the last stage, or an int (2-D unless a
            3-D family is given).
        align_corners: the frame of the grid (see :mod:`stnkit.geometry.coords`).

    Returns:
        ``(B, H_out, W_out, 2)`` or ``(B, D_out, H_out, W_out, 3)``, finite: points sent to infinity read the
        padding.

    Example:
        >>> t = torch.tensor([[0.25, 0.0]])
        >>> g = compose_grid([t, t], ["translation", "translation"], (2, 4))
        >>> torch.allclose(g, get_transform("translation").grid(2 * t, (2, 4)))
        True
        >>> s, b = get_transform("similarity").identity(1), get_transform("tps").identity(1)
        >>> compose_grid([s, b], ["similarity", "tps"], 8).shape
        torch.Size([1, 8, 8, 2])
        >>> r, a = get_transform("rigid", dims=3).identity(1), get_transform("affine", dims=3).identity(1)
        >>> compose_grid([r, a], ["rigid", "affine"], (2, 3, 4)).shape
        torch.Size([1, 2, 3, 4, 3])
    """
    if not isinstance(params, (list, tuple)) or not isinstance(transforms, (list, tuple)):
        raise TypeError(
            f"params and transforms must be lists, got {type(params).__name__} and {type(transforms).__name__}"
        )
    if len(params) != len(transforms) or not params:
        raise ValueError(
            f"params and transforms must be non-empty lists of equal length, got {len(params)} and {len(transforms)}"
        )
    three = isinstance(out_size, (tuple, list, torch.Size)) and len(out_size) == 3
    dims = 3 if three or any(isinstance(t, TransformFamily) and t.dims == 3 for t in transforms) else 2
    families = [get_transform(t, dims=dims) for t in transforms]
    for i, family in enumerate(families[:-1]):
        if getattr(family, "is_field", False):
            raise ValueError(
                f"transforms[{i}] is the field transform {family.name!r}, which can only be the last stage "
                "(compose fields with stnkit.geometry.compose_fields)"
            )
    size = check_size("out_size", out_size) if dims == 2 else check_size_3d("out_size", out_size)
    g = families[-1].grid(params[-1], size, align_corners)
    b = g.shape[0]
    pts = (check_points if dims == 2 else check_points_3d)("grid points", g.reshape(b, -1, dims))
    for family, p in zip(reversed(families[:-1]), reversed(params[:-1])):
        pts = family.transform_points(p, pts)
    return finite_grid(pts.view(b, *size, dims))
