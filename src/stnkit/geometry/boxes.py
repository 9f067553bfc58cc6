"""Boxes: the window an ``attention`` transform reads, in input pixels, and box overlap.

A box is ``(x0, y0, x1, y1)`` in **pixel edges** of the input: pixel ``j`` spans
``[j, j + 1]``, so a box ``(0, 0, W, H)`` is the whole ``W x H`` image. The
window of an ``attention`` transform (``s, tx, ty``, output -> input, see
:class:`~stnkit.geometry.Attention`) is the part of the input the output's
pixels cover: with ``align_corners=False`` the output's outer edges (``u = -1,
+1``) land on ``t - s`` and ``t + s``, which are pixel edges of the input;
with ``align_corners=True`` the output's border pixel *centres* sit at ``u = -1,
+1`` and its edges half a pixel further, and normalised input coordinates count
from the border pixels' centres (see :mod:`stnkit.geometry.coords`).

References:
    M. Jaderberg, K. Simonyan, A. Zisserman, K. Kavukcuoglu, "Spatial
    Transformer Networks", NeurIPS 2015 (arXiv:1506.02025): section 3.2 (the
    attention transform) and appendix A.2 (co-localisation, boxes scored by IoU).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import check_float_tensor, check_size


def _check_params(name: str, x: object, width: int) -> Tensor:
    x = check_float_tensor(name, x)
    if x.ndim != 2 or x.shape[1] != width:
        raise ValueError(f"{name} must have shape (B, {width}), got {tuple(x.shape)}")
    return x


def _edges(align_corners: bool, out_size: int | tuple[int, int] | None) -> tuple[float, float]:
    """The output's outer pixel edges in normalised output coordinates, (x, y)."""
    if not align_corners:
        return 1.0, 1.0
    if out_size is None:
        raise ValueError("out_size is needed with align_corners=True (the output's edges depend on it), got None")
    ho, wo = check_size("out_size", out_size)
    if ho < 2 or wo < 2:
        raise ValueError(f"out_size must be at least (2, 2) with align_corners=True, got {(ho, wo)}")
    return wo / (wo - 1), ho / (ho - 1)


def _to_pixels(v: Tensor, n: int, align_corners: bool) -> Tensor:
    return (v + 1.0) * (n - 1) / 2.0 + 0.5 if align_corners else (v + 1.0) * n / 2.0


def _from_pixels(x: Tensor, n: int, align_corners: bool) -> Tensor:
    return (x - 0.5) * 2.0 / (n - 1) - 1.0 if align_corners else x * 2.0 / n - 1.0


def attention_box(
    params: Tensor,
    in_size: int | tuple[int, int],
    out_size: int | tuple[int, int] | None = None,
    align_corners: bool = False,
) -> Tensor:
    """The input window ``(B, 4)`` = ``(x0, y0, x1, y1)`` (pixel edges) that ``attention`` params read.

    Args:
        params: ``(B, 3)`` ``s, tx, ty`` of :class:`~stnkit.geometry.Attention`
            (output -> input, normalised, x before y).
        in_size: the input's ``(H, W)``.
        out_size: the output's ``(H_out, W_out)``; needed only with ``align_corners=True``.
        align_corners: the sampler's convention.

    A negative scale flips the window; the box is still ordered (``x0 <= x1``).

    Example:
        >>> p = torch.tensor([[1 / 3, -1 / 3, 0.0]])  # a third of the width, left of centre
        >>> attention_box(p, 84).round(decimals=4)  # a 28 x 28 window from pixel edge 14 across, 28 down
        tensor([[14., 28., 42., 56.]])
        >>> attention_box(torch.tensor([[1.0, 0.0, 0.0]]), 84, out_size=28, align_corners=True)
        tensor([[-1.0370, -1.0370, 85.0370, 85.0370]])

    References:
        Jaderberg et al., "Spatial Transformer Networks", NeurIPS 2015, section 3.2 and appendix A.2.
    """
    params = _check_params("params", params, 3)
    h, w = check_size("in_size", in_size)
    ex, ey = _edges(align_corners, out_size)
    s, tx, ty = params.unbind(1)
    a = _to_pixels(tx - s.abs() * ex, w, align_corners)
    b = _to_pixels(tx + s.abs() * ex, w, align_corners)
    c = _to_pixels(ty - s.abs() * ey, h, align_corners)
    d = _to_pixels(ty + s.abs() * ey, h, align_corners)
    return torch.stack([a, c, b, d], dim=1)


def attention_from_box(
    boxes: Tensor,
    in_size: int | tuple[int, int],
    out_size: int | tuple[int, int] | None = None,
    align_corners: bool = False,
) -> Tensor:
    """The ``attention`` params ``(B, 3)`` whose window is each square box ``(x0, y0, x1, y1)``; inverse of :func:`attention_box`.

    The scale comes from the box's width (``attention`` has one scale for x and
    y): on a square input a square box is reproduced exactly.

    Example:
        >>> attention_from_box(torch.tensor([[14.0, 28.0, 42.0, 56.0]]), 84)
        tensor([[ 0.3333, -0.3333,  0.0000]])

    References:
        Jaderberg et al., "Spatial Transformer Networks", NeurIPS 2015, section 3.2.
    """
    boxes = _check_params("boxes", boxes, 4)
    h, w = check_size("in_size", in_size)
    ex, ey = _edges(align_corners, out_size)
    x0, y0, x1, _ = boxes.unbind(1)
    u0, u1 = _from_pixels(x0, w, align_corners), _from_pixels(x1, w, align_corners)
    s = (u1 - u0) / (2.0 * ex)
    ty = _from_pixels(y0, h, align_corners) + s * ey
    return torch.stack([s, (u0 + u1) / 2.0, ty], dim=1)


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Intersection over union ``(B,)`` of paired boxes ``(B, 4)`` = ``(x0, y0, x1, y1)``.

    Boxes that do not overlap score 0; two empty boxes score 0.

    Example:
        >>> box_iou(torch.tensor([[0.0, 0.0, 2.0, 2.0]]), torch.tensor([[1.0, 1.0, 3.0, 3.0]]))  # 1 / (4 + 4 - 1)
        tensor([0.1429])

    References:
        Jaderberg et al., "Spatial Transformer Networks", NeurIPS 2015, appendix A.2 (IoU > 0.5 counts as localised).
    """
    a = _check_params("a", a, 4)
    b = _check_params("b", b, 4)
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    iw = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).clamp(min=0)
    ih = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])).clamp(min=0)
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    union = area_a + area_b - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(union.dtype).tiny), torch.zeros_like(union))


__all__ = ["attention_box", "attention_from_box", "box_iou"]
