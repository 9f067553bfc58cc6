"""Predicates on polygons given by their corners (normalised coordinates, x before y)."""

from __future__ import annotations

import torch  # noqa: F401  (doctest namespace)
from torch import Tensor

from .._checks import check_points


def quad_is_convex(quad: Tensor) -> Tensor:
    """``(B,)`` bool: True where a quadrilateral is strictly convex with the image square's orientation.

    The corners are in the order top-left, top-right, bottom-right, bottom-left
    of the image square ``[-1, 1]^2`` (``F.affine_grid``'s frame: x before y, y
    pointing down), so that square itself is convex. A quadrilateral passes when
    the cross product of every pair of consecutive edges is ``> 0``: it is then
    neither folded (a reflex corner or crossing edges), nor mirrored (the
    opposite orientation), nor degenerate (three collinear corners). A
    homography that maps the square's corners to such a quadrilateral keeps its
    horizon outside the square.

    Args:
        quad: ``(B, 4, 2)`` floating corners, x before y.

    Returns:
        ``(B,)`` bool on the device of ``quad`` (NaN corners give False).

    Example:
        >>> square = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
        >>> dented = square.clone()
        >>> dented[2] = torch.tensor([-0.5, -0.8])  # bottom-right corner pushed inside
        >>> quad_is_convex(torch.stack([square, dented, square.flip(0)]))
        tensor([ True, False, False])
    """
    quad = check_points("quad", quad)
    if quad.shape[1] != 4:
        raise ValueError(f"quad must have shape (B, 4, 2), four corners per sample, got shape {tuple(quad.shape)}")
    e = quad.roll(-1, dims=1) - quad  # edges k -> k+1
    e2 = e.roll(-1, dims=1)
    cross = e[..., 0] * e2[..., 1] - e[..., 1] * e2[..., 0]
    return (cross > 0).all(dim=1)


__all__ = ["quad_is_convex"]
