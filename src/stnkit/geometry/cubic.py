"""Cubic B-spline interpolation in 2-D and 3-D, in PyTorch (differentiable in the image and the grid).

``F.grid_sample(mode="bicubic")`` uses Keys' cubic convolution (a = -0.75), 2-D only.
:func:`sample_cubic` instead evaluates the interpolating cubic B-spline, as
``scipy.ndimage.map_coordinates(order=3)`` does, on images and volumes:
``f(t) = sum_k c[k] beta3(t - k)`` in voxel coordinates, with coefficients ``c``
from :func:`bspline_prefilter`, so that ``f`` passes through the samples.

The grid follows stnkit's convention (:mod:`stnkit.geometry.coords`): normalised
``[-1, 1]`` points, x before y before z, output to input, ``align_corners`` as in
``F.grid_sample``. The padding modes extend the *signal* before the spline is fitted,
as scipy's modes do:

* ``zeros``: zeros outside (scipy ``mode="grid-constant"``, ``cval=0``);
* ``border``: the edge values repeated (scipy ``mode="nearest"``);
* ``reflection``: symmetric about the edges with ``align_corners=False``
  (half-sample, scipy ``mode="reflect"``), about the border voxel centres with
  ``align_corners=True`` (whole-sample, scipy ``mode="mirror"``), as grid_sample
  reflects.

References:
    M. Unser, A. Aldroubi, M. Eden, "Fast B-spline transforms for continuous image
    representation and interpolation", IEEE TPAMI 13(3), 1991; M. Unser, "Splines:
    a perfect fit for signal and image processing", IEEE Signal Processing Magazine,
    1999 (the recursive prefilter and its initialisation). T. Briand, P. Monasse,
    "Theory and Practice of Image B-Spline Interpolation", IPOL 2018 (the
    half-sample symmetric boundary).
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import check_choice, check_float_tensor
from .warp import PADDING_MODES

POLE = math.sqrt(3.0) - 2.0  # the pole of the cubic B-spline's inverse filter, z = sqrt(3) - 2
BOUNDARIES = ("reflect", "mirror")
# zeros and border pad the signal by this many voxels before prefiltering; the far
# boundary's effect on the image is below |z|^PAD ~ 7e-10 of its values
PAD = 16


def _prefilter_axis(x: Tensor, dim: int, boundary: str) -> Tensor:
    """The cubic B-spline prefilter along one axis: causal then anticausal first-order recursions."""
    n = x.shape[dim]
    if n == 1:
        return x.clone()
    z = POLE
    s = x.movedim(dim, 0)
    # causal initialisation c+[0] = sum_j z^j s~[-j] over the symmetric extension s~, truncated
    # once z^j is negligible (the extension is periodic: the sum wraps for short signals)
    horizon = int(math.ceil(math.log(1e-17) / math.log(abs(z))))
    idx = []
    for j in range(horizon):
        k = -j
        if boundary == "mirror":  # whole-sample: period 2n - 2, s~[-k] = s[k]
            k %= 2 * n - 2
            k = 2 * n - 2 - k if k >= n else k
        else:  # half-sample ("reflect"): period 2n, s~[-1 - k] = s[k]
            k %= 2 * n
            k = 2 * n - 1 - k if k >= n else k
        idx.append(k)
    powers = torch.tensor([z**j for j in range(horizon)], dtype=x.dtype, device=x.device)
    sel = s[torch.tensor(idx, device=x.device)]
    first = torch.tensordot(powers, sel, dims=([0], [0]))
    causal = [first]
    for k in range(1, n):
        causal.append(s[k] + z * causal[-1])
    # anticausal initialisation (Unser 1999 for the whole-sample case; Briand & Monasse 2018, half-sample)
    if boundary == "mirror":
        last = (z / (z * z - 1.0)) * (causal[n - 1] + z * causal[n - 2])
    else:
        last = (z / (z - 1.0)) * causal[n - 1]
    anti = [last]
    for k in range(n - 2, -1, -1):
        anti.append(z * (anti[-1] - causal[k]))
    gain = (1.0 - z) * (1.0 - 1.0 / z)  # = 6: the filter's DC gain
    out = torch.stack(anti[::-1]) * gain
    return out.movedim(0, dim)


def bspline_prefilter(x: Tensor, boundary: str = "reflect", spatial_dims: int | None = None) -> Tensor:
    """The coefficients of the cubic B-spline that interpolates ``x``.

    Solves ``x[k] = (c[k-1] + 4 c[k] + c[k+1]) / 6`` along every spatial axis with
    Unser's recursive filter: the inverse of the B-spline's sampled kernel
    ``(1, 4, 1) / 6`` factors into a causal and an anticausal first-order recursion
    with pole ``z = sqrt(3) - 2`` and gain 6,
    ``c+[k] = x[k] + z c+[k-1]``, ``c-[k] = z (c-[k+1] - c+[k])``, ``c = 6 c-``, each
    started from the symmetric extension of the signal beyond its ends. Separable:
    one pass per axis. Differentiable (a linear map of ``x``).

    Args:
        x: ``(B, C, H, W)`` or ``(B, C, D, H, W)`` (any leading axes with ``spatial_dims``).
        boundary: the symmetric extension: ``reflect`` (half-sample, about the outer
            edges: ``b a | a b c | c b``, scipy's ``mode="reflect"``) or ``mirror``
            (whole-sample, about the border samples: ``c b | a b c | b a``, scipy's
            ``mode="mirror"``).
        spatial_dims: how many trailing axes to filter; ``x.ndim - 2`` by default.

    Returns:
        The coefficients, ``x``'s shape and dtype.

    Example:
        >>> c = bspline_prefilter(torch.tensor([[[0.0, 0.0, 6.0, 0.0, 0.0]]]), "mirror")
        >>> ((c[..., :-2] + 4 * c[..., 1:-1] + c[..., 2:]) / 6).round(decimals=6)  # the interior samples back
        tensor([[[0., 6., 0.]]])
    """
    x = check_float_tensor("x", x)
    check_choice("boundary", boundary, BOUNDARIES)
    nd = x.ndim - 2 if spatial_dims is None else spatial_dims
    if not 1 <= nd <= x.ndim:
        raise ValueError(f"spatial_dims must be in [1, {x.ndim}], got {nd}")
    for dim in range(x.ndim - nd, x.ndim):
        x = _prefilter_axis(x, dim, boundary)
    return x


def _weights(f: Tensor) -> list[Tensor]:
    """The cubic B-spline's weights of the taps ``floor(t) - 1 .. floor(t) + 2``, ``f = t - floor(t)``."""
    g = 1.0 - f
    f2, f3 = f * f, f * f * f
    return [g * g * g / 6.0, (3.0 * f3 - 6.0 * f2 + 4.0) / 6.0, (-3.0 * f3 + 3.0 * f2 + 3.0 * f + 1.0) / 6.0, f3 / 6.0]


def _reflect(i: Tensor, n: int, align_corners: bool) -> Tensor:
    if n == 1:
        return torch.zeros_like(i)
    if align_corners:  # whole-sample, period 2n - 2
        i = i.remainder(2 * n - 2)
        return torch.where(i >= n, 2 * n - 2 - i, i)
    i = i.remainder(2 * n)  # half-sample, period 2n
    return torch.where(i >= n, 2 * n - 1 - i, i)


def sample_cubic(
    x: Tensor,
    grid: Tensor,
    padding_mode: str = "zeros",
    align_corners: bool = False,
) -> Tensor:
    """Sample ``x`` at a grid of normalised points by cubic B-spline interpolation.

    Like ``F.grid_sample`` (same grid: ``(x, y[, z])`` normalised, output to input,
    ``align_corners`` as there) but the value at a point is the interpolating cubic
    B-spline of the samples (``C^2``, exact at the voxel centres), as
    ``scipy.ndimage.map_coordinates(order=3)`` computes it; the padding modes extend
    the signal before the fit (module docstring: ``zeros`` = scipy ``grid-constant``,
    ``border`` = ``nearest``, ``reflection`` = ``reflect`` or, with
    ``align_corners=True``, ``mirror``). Differentiable in ``x`` and ``grid``.

    Args:
        x: ``(B, C, H, W)`` or ``(B, C, D, H, W)``.
        grid: ``(B, H_out, W_out, 2)`` or ``(B, D_out, H_out, W_out, 3)``; cast to ``x``'s dtype.
        padding_mode: ``zeros``, ``border`` or ``reflection``.
        align_corners: the frame of the grid.

    Returns:
        ``(B, C, *grid.shape[1:-1])`` in ``x``'s dtype.

    Example:
        >>> x = torch.arange(12.0).view(1, 1, 3, 4)
        >>> g = F.affine_grid(torch.eye(2, 3)[None], [1, 1, 3, 4], align_corners=False)
        >>> torch.allclose(sample_cubic(x, g), x, atol=1e-5)  # it interpolates
        True
    """
    x = check_float_tensor("x", x)
    check_choice("padding_mode", padding_mode, PADDING_MODES)
    nd = x.ndim - 2
    if nd not in (2, 3):
        raise ValueError(f"x must have shape (B, C, H, W) or (B, C, D, H, W), got shape {tuple(x.shape)}")
    if not isinstance(grid, Tensor) or grid.ndim != x.ndim or grid.shape[-1] != nd or grid.shape[0] != x.shape[0]:
        got = tuple(grid.shape) if isinstance(grid, Tensor) else type(grid).__name__
        want = "H_out, W_out, 2" if nd == 2 else "D_out, H_out, W_out, 3"
        raise ValueError(f"grid must have shape ({x.shape[0]}, {want}), got {got}")
    grid = grid.to(x.dtype)
    sizes = [int(s) for s in x.shape[2:]]  # ([d,] h, w)
    if padding_mode == "reflection":
        coef = bspline_prefilter(x, "mirror" if align_corners else "reflect")
        pad = 0
    else:
        pad = PAD
        mode = "constant" if padding_mode == "zeros" else "replicate"
        coef = bspline_prefilter(F.pad(x, [pad] * (2 * nd), mode=mode), "mirror")
    psizes = [int(s) for s in coef.shape[2:]]
    b, c = x.shape[:2]
    out_shape = grid.shape[1:-1]
    pts = grid.reshape(b, -1, nd)
    taps, weights, valid = [], [], []
    for axis in range(nd):  # tensor axis ([d,] h, w); the grid's coordinate nd - 1 - axis
        n = sizes[axis]
        g = pts[..., nd - 1 - axis]
        t = (g + 1.0) * (n - 1) / 2.0 if align_corners else ((g + 1.0) * n - 1.0) / 2.0
        i0 = torch.floor(t)
        w = _weights(t - i0)
        i0 = i0.long()
        ax_taps, ax_valid = [], []
        for o in range(-1, 3):
            i = i0 + o
            if padding_mode == "reflection":
                j, ok = _reflect(i, n, align_corners), None
            else:
                j = i + pad
                ok = (j >= 0) & (j < psizes[axis]) if padding_mode == "zeros" else None
                j = j.clamp(0, psizes[axis] - 1)
            ax_taps.append(j)
            ax_valid.append(ok)
        taps.append(ax_taps)
        weights.append(w)
        valid.append(ax_valid)
    strides = [math.prod(psizes[a + 1 :]) for a in range(nd)]
    flat_coef = coef.reshape(b, c, -1)
    out = None
    for combo in itertools.product(range(4), repeat=nd):
        index = sum(taps[a][o] * strides[a] for a, o in enumerate(combo))
        weight = math.prod(weights[a][o] for a, o in enumerate(combo))
        oks = [valid[a][o] for a, o in enumerate(combo) if valid[a][o] is not None]
        if oks:
            weight = weight * torch.stack(oks).all(0).to(weight.dtype)
        vals = torch.gather(flat_coef, 2, index.unsqueeze(1).expand(b, c, -1))
        term = vals * weight.unsqueeze(1)
        out = term if out is None else out + term
    return out.reshape(b, c, *out_shape)


__all__ = ["bspline_prefilter", "sample_cubic"]
