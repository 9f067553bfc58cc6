"""Is the spatial transformer healthy? Statistics of its sampling grid, a warning, and a penalty.

The failures users of STNs meet most are a transformer that zooms (or moves) out
past the image, so its output goes black; one that collapses to a point, so its
output repeats a few input pixels; one that produces NaNs; and one that never
leaves the identity. Each shows in the sampling grid (stnkit's convention: the
grid holds, for every output pixel, the **input** point it reads, normalised to
``[-1, 1]``, x before y):

* ``outside_fraction``: the fraction of sampling points with ``|x| > 1`` or
  ``|y| > 1``, which read the padding (non-finite points count as outside);
* ``mean_scale``: the warp's mean area scale, the mean over output points of
  ``sqrt(|det J|)``, ``J`` the Jacobian of the output -> input map in
  normalised coordinates. ``> 1``: the transformer reads a larger region of the
  input than its output frame, i.e. it zooms **out**; ``< 1`` zooms in; ``0``
  collapsed to a point. One definition for every family: exact for the matrix
  families (``sqrt(|det A|)`` of the 2x2 linear part for the affine ones,
  ``sqrt(|det H| / |w|^3)`` per point for the projective one), estimated by
  finite differences of the grid otherwise (tps, or any grid);
* ``identity_distance``: the RMS Euclidean distance of the sampling points from
  the identity grid, in normalised units;
* ``nonfinite``: grid points (:func:`sampling_grid_stats`) or samples
  (:func:`sampling_stats`) whose values are NaN or infinite.

:func:`collapse_warning` turns these into one line of advice (thresholds below);
:func:`coverage_penalty` is a differentiable loss term that pushes sampling
points back inside the image. All pure torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from .._checks import check_float_tensor, check_size
from ..geometry import TransformFamily, get_transform
from ..geometry.coords import base_grid

# collapse_warning's thresholds
OUTSIDE_FRACTION_WARN = 0.5  # more than half the output reads the padding: zoomed/moved out, black output
COLLAPSED_SCALE = 0.05  # mean_scale below this: the output is a few input pixels blown up
IDENTITY_DISTANCE = 1e-3  # RMS displacement below this once training has started: never left the identity

STAT_KEYS = ("outside_fraction", "mean_scale", "identity_distance", "nonfinite")


def _check_grid(grid: object) -> Tensor:
    grid = check_float_tensor("grid", grid)
    if grid.ndim != 4 or grid.shape[-1] != 2 or 0 in grid.shape:
        raise ValueError(f"grid must have shape (B, H, W, 2) with B, H, W > 0, got shape {tuple(grid.shape)}")
    return grid


def _outside(grid: Tensor) -> Tensor:
    """Points that read the padding: ``|x| > 1`` or ``|y| > 1``, or not finite. ``(B, H, W)`` bool."""
    return ~((grid.abs() <= 1).all(-1))


def _finite_mean(x: Tensor) -> float:
    x = x[torch.isfinite(x)]
    return float(x.double().mean()) if x.numel() else math.nan


def _identity_distance(grid: Tensor, align_corners: bool) -> float:
    ident = base_grid(tuple(grid.shape[1:3]), align_corners, device=grid.device, dtype=grid.dtype)
    d2 = (grid - ident).square().sum(-1)
    return math.sqrt(_finite_mean(d2))


def _fd_scale(grid: Tensor, align_corners: bool) -> Tensor:
    """``sqrt(|det J|)`` ``(B, H, W)`` from finite differences of the grid (central inside, one-sided at the edges)."""
    h, w = grid.shape[1:3]
    if h < 2 or w < 2:
        return torch.full(grid.shape[:3], math.nan, dtype=grid.dtype, device=grid.device)
    step_y = 2.0 / (h - 1) if align_corners else 2.0 / h
    step_x = 2.0 / (w - 1) if align_corners else 2.0 / w
    dy, dx = torch.gradient(grid, spacing=(step_y, step_x), dim=(1, 2))  # d(grid)/dy_out, d(grid)/dx_out
    det = dx[..., 0] * dy[..., 1] - dy[..., 0] * dx[..., 1]
    return det.abs().sqrt()


def sampling_grid_stats(grid: Tensor, align_corners: bool = False) -> dict[str, float]:
    """Health statistics of a sampling grid ``(B, H, W, 2)`` (output -> input points, normalised, x before y).

    Returns ``{"outside_fraction", "mean_scale", "identity_distance", "nonfinite"}``
    as Python numbers over the whole batch (see the module's docstring). Here
    ``mean_scale`` is always the finite-difference estimate (exact for affine
    grids, up to rounding); it is NaN when the grid has fewer than 2 points on a
    side. ``nonfinite`` counts points with a NaN or infinite coordinate; they
    count as outside and are left out of the other means. ``align_corners`` is
    the frame the grid was made in (for the identity grid and the spacing).

    Example:
        >>> grid = get_transform("attention").grid(torch.tensor([[2.0, 0.0, 0.0]]), (8, 8))  # zoom out by 2
        >>> stats = sampling_grid_stats(grid)
        >>> stats["outside_fraction"], round(stats["mean_scale"], 4), stats["nonfinite"]
        (0.75, 2.0, 0)
    """
    grid = _check_grid(grid).detach()
    return {
        "outside_fraction": float(_outside(grid).double().mean()),
        "mean_scale": _finite_mean(_fd_scale(grid, align_corners)),
        "identity_distance": _identity_distance(grid, align_corners),
        "nonfinite": int((~torch.isfinite(grid).all(-1)).sum()),
    }


def _exact_scale(family: TransformFamily, params: Tensor, grid: Tensor, align_corners: bool) -> Tensor | None:
    """``sqrt(|det J|)`` for the matrix families, broadcastable to ``(B, H, W)``; ``None`` for the others."""
    if not getattr(family, "is_matrix", False):
        return None
    m = family.matrix(params).double()
    det = torch.linalg.det(m)  # affine: det of the 2x2 part, as the last row is (0, 0, 1)
    if getattr(family, "is_affine", True):
        return det.abs().sqrt().view(-1, 1, 1)
    # a homography's Jacobian determinant at p is det(H) / w(p)^3, w = h31 x + h32 y + 1
    p = base_grid(tuple(grid.shape[1:3]), align_corners, device=params.device, dtype=torch.float64)
    wz = p[..., 0] * m[:, 2, 0].view(-1, 1, 1) + p[..., 1] * m[:, 2, 1].view(-1, 1, 1) + m[:, 2, 2].view(-1, 1, 1)
    return (det.abs().view(-1, 1, 1) / wz.abs().pow(3)).sqrt()


def sampling_stats(
    family: str | TransformFamily,
    params: Tensor,
    out_size: int | tuple[int, int],
    align_corners: bool = False,
) -> dict[str, float]:
    """Health statistics of a family's warps ``params`` ``(B, num_params)`` for an output of ``out_size``.

    Builds the grid as :class:`~stnkit.nn.SpatialTransformer` does
    (``family.grid(params, out_size, align_corners)``) and returns
    :func:`sampling_grid_stats`'s dict, with ``mean_scale`` exact for the matrix
    families and ``nonfinite`` the number of samples whose parameters are NaN or
    infinite (left out of the other statistics, which are NaN if no sample is
    finite). Use ``st.predict_params(x)`` for a transformer's parameters.

    Example:
        >>> fam = get_transform("affine")
        >>> stats = sampling_stats(fam, fam.identity(4), (28, 28))
        >>> stats["outside_fraction"], stats["mean_scale"], stats["identity_distance"] < 1e-6
        (0.0, 1.0, True)
        >>> collapsed = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
        >>> sampling_stats("affine", collapsed, 28)["mean_scale"]
        0.0
    """
    family = get_transform(family)
    params = check_float_tensor("params", params)
    size = check_size("out_size", out_size)
    # the family's own shape check (affine also takes (B, 2, 3)), on values it accepts
    checked = family.check_params(torch.nan_to_num(params.detach(), nan=0.0, posinf=0.0, neginf=0.0))
    params = params.detach().reshape(checked.shape)
    finite = torch.isfinite(params).all(1)
    nonfinite = int((~finite).sum())
    if nonfinite == params.shape[0]:
        return {
            "outside_fraction": math.nan,
            "mean_scale": math.nan,
            "identity_distance": math.nan,
            "nonfinite": nonfinite,
        }
    params = params[finite]
    grid = family.grid(params, size, align_corners)
    stats = sampling_grid_stats(grid, align_corners)
    exact = _exact_scale(family, params, grid, align_corners)
    if exact is not None:
        stats["mean_scale"] = _finite_mean(exact.expand(grid.shape[:3]))
    stats["nonfinite"] = nonfinite
    return stats


def collapse_warning(
    stats: Mapping[str, float] | Sequence[Mapping[str, float]],
    started: bool | None = None,
    *,
    outside_threshold: float = OUTSIDE_FRACTION_WARN,
    scale_threshold: float = COLLAPSED_SCALE,
    identity_threshold: float = IDENTITY_DISTANCE,
) -> str | None:
    """One line of advice if the transformer's statistics show a known failure, else ``None``.

    ``stats`` is one dict of :func:`sampling_stats` / :func:`sampling_grid_stats`,
    or their history (oldest first; the latest entry is judged, and the identity
    failure needs every entry near the identity). In order of severity:

    * ``nonfinite > 0``: the parameters went NaN/inf;
    * ``mean_scale < scale_threshold`` (:data:`COLLAPSED_SCALE`): collapsed to a point;
    * ``outside_fraction > outside_threshold`` (:data:`OUTSIDE_FRACTION_WARN`):
      zoomed or moved out past the image, the output goes black;
    * ``identity_distance < identity_threshold`` (:data:`IDENTITY_DISTANCE`) once
      training has ``started`` (default: the history has two entries or more;
      a single dict never triggers it unless ``started=True``).

    Example:
        >>> ok = {"outside_fraction": 0.1, "mean_scale": 0.9, "identity_distance": 0.2, "nonfinite": 0}
        >>> collapse_warning(ok) is None
        True
        >>> print(collapse_warning({**ok, "outside_fraction": 0.8}))  # doctest: +ELLIPSIS
        spatial transformer zoomed or moved out past the image: 80% of sampling points read the padding ...
        >>> print(collapse_warning([{**ok, "identity_distance": 0.0}] * 2))  # doctest: +ELLIPSIS
        spatial transformer never left the identity: identity_distance 0 < 0.001; try a higher --loc-lr-mult or more epochs
    """
    history = [stats] if isinstance(stats, Mapping) else list(stats) if isinstance(stats, Sequence) else None
    if not history or not all(isinstance(s, Mapping) for s in history):
        raise TypeError(f"stats must be a dict of sampling statistics or a non-empty list of them, got {stats!r}")
    for i, s in enumerate(history):
        missing = [k for k in STAT_KEYS if k not in s]
        if missing:
            raise ValueError(f"stats[{i}] must have the keys {', '.join(STAT_KEYS)}, it lacks {', '.join(missing)}")
    if started is None:
        started = len(history) >= 2
    now = history[-1]
    if now["nonfinite"] > 0:
        return (
            f"spatial transformer parameters went NaN/inf ({now['nonfinite']} non-finite): "
            "try a lower learning rate or --loc-lr-mult, or --bounded"
        )
    if now["mean_scale"] < scale_threshold:
        return (
            f"spatial transformer collapsed to a point: mean_scale {now['mean_scale']:.3g} < {scale_threshold:g} "
            "(the output is a few input pixels blown up); try --bounded or a lower learning rate / --loc-lr-mult"
        )
    if now["outside_fraction"] > outside_threshold:
        return (
            f"spatial transformer zoomed or moved out past the image: {now['outside_fraction']:.0%} of sampling "
            f"points read the padding (> {outside_threshold:.0%}), the output goes black; try --bounded, a lower "
            "--loc-lr-mult, or --coverage-weight W (stnkit.nn.coverage_penalty in the loss)"
        )
    if started and all(s["identity_distance"] < identity_threshold for s in history):
        return (
            f"spatial transformer never left the identity: identity_distance {now['identity_distance']:.2g} < "
            f"{identity_threshold:g}; try a higher --loc-lr-mult or more epochs"
        )
    return None


def coverage_penalty(grid: Tensor) -> Tensor:
    """Differentiable penalty for sampling points outside the image: 0 when every point is inside.

    The mean over the grid's ``B * H * W`` points of
    ``relu(|x| - 1)^2 + relu(|y| - 1)^2``, the squared amount by which each
    coordinate leaves ``[-1, 1]`` (``grid`` ``(B, H, W, 2)``, output -> input,
    normalised). Its gradient is zero for points inside and pulls outside points
    back towards the border; add ``weight * coverage_penalty(st.grid(params, size))``
    to the loss to keep a transformer from zooming out past the image.

    Returns:
        a 0-dim tensor in the grid's dtype.

    Example:
        >>> grid = torch.tensor([[[[0.5, 0.0], [1.5, -2.0]]]])  # one point inside, one outside
        >>> coverage_penalty(grid)  # (0.5^2 + 1^2) / 2 points
        tensor(0.6250)
    """
    grid = _check_grid(grid)
    return (grid.abs() - 1.0).clamp_min(0.0).square().sum(-1).mean()


__all__ = [
    "COLLAPSED_SCALE",
    "IDENTITY_DISTANCE",
    "OUTSIDE_FRACTION_WARN",
    "collapse_warning",
    "coverage_penalty",
    "sampling_grid_stats",
    "sampling_stats",
]
